export default function Page() {
  return <main>canvas</main>;
}

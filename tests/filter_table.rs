//! Table tests of GitHub Actions filter-pattern semantics, through the
//! public API.
//!
//! Every expectation comes from GitHub's documentation ("Filter pattern
//! cheat sheet" and the `on.push` filter sections of "Workflow syntax for
//! GitHub Actions") and from the facts in DESIGN.md, never from what the
//! code happens to output. Each table collects ALL disagreements and fails
//! once at the end, so one run shows every one of them.

use hoist::changes::{ChangedFiles, Decision, PushRef, Trigger, decide};
use hoist::pattern::{Pattern, PatternList};
use hoist::workflow::Workflow;
use std::path::Path;

/// Filters of `on.push`, as `(key, patterns)`, written to YAML by
/// [`workflow_yaml`].
type Filters = &'static [(&'static str, &'static [&'static str])];

/// The files a push changed, as a table can hold them.
#[derive(Debug, Clone, Copy)]
enum Changed {
    Files(&'static [&'static str]),
    Unknown,
}

impl Changed {
    fn to_changed_files(self) -> ChangedFiles {
        match self {
            Changed::Files(files) => {
                ChangedFiles::Known(files.iter().map(|f| f.to_string()).collect())
            }
            Changed::Unknown => ChangedFiles::Unknown("the base commit is missing".into()),
        }
    }
}

/// A workflow whose `on.push` holds `filters`, every pattern single-quoted
/// (as DESIGN.md asks for patterns starting with `*`, `[` or `!`; a
/// backslash is literal inside single quotes).
fn workflow_yaml(filters: Filters) -> String {
    let mut yaml = String::from("name: table\non:\n  push:\n");
    for (key, patterns) in filters {
        yaml.push_str(&format!("    {key}:\n"));
        for pattern in *patterns {
            yaml.push_str(&format!("      - '{}'\n", pattern.replace('\'', "''")));
        }
    }
    yaml.push_str("jobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n");
    yaml
}

fn trigger(filters: Filters) -> Result<Trigger, String> {
    let yaml = workflow_yaml(filters);
    let workflow = Workflow::parse(Path::new("w.yml"), &yaml)
        .map_err(|e| format!("Workflow::parse failed: {e}\n--- yaml ---\n{yaml}"))?;
    Trigger::of(&workflow).map_err(|e| format!("Trigger::of failed: {e}"))
}

/// Parses the workflow, compiles its trigger and decides one push.
fn run_decision(filters: Filters, push_ref: &str, changed: Changed) -> Result<Decision, String> {
    let trigger = trigger(filters)?;
    let push_ref =
        PushRef::parse(push_ref).map_err(|e| format!("PushRef::parse({push_ref:?}): {e}"))?;
    decide(&trigger, Some(&push_ref), &changed.to_changed_files())
        .map_err(|e| format!("decide failed: {e}"))
}

fn report(table: &str, total: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{table}: {} of {total} cases disagree with GitHub's documented semantics:\n  - {}",
        failures.len(),
        failures.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------
// 1. Path patterns, `paths` semantics: (patterns, path, included)
// ---------------------------------------------------------------------------

const PATH_CASES: &[(&[&str], &str, bool)] = &[
    // Cheat sheet: `*` matches any file in the root (not in a directory).
    (&["*"], "README.md", true),
    (&["*"], "server.rb", true),
    (&["*"], "docs/README.md", false),
    (&["*"], "path/with/slash", false),
    // Cheat sheet: `*.jsx?` matches `.js` and `.jsx` files in the root.
    (&["*.jsx?"], "page.js", true),
    (&["*.jsx?"], "page.jsx", true),
    (&["*.jsx?"], "page.jsxx", false),
    (&["*.jsx?"], "page.ts", false),
    (&["*.jsx?"], "src/page.js", false),
    // Cheat sheet: `**` matches every file of the repository.
    (&["**"], "all/the/files.md", true),
    (&["**"], "README.md", true),
    (&["**"], ".github/workflows/ci.yml", true),
    // Cheat sheet: `*.js` matches `.js` files in the root only.
    (&["*.js"], "app.js", true),
    (&["*.js"], "index.js", true),
    (&["*.js"], "src/app.js", false),
    (&["*.js"], "app.jsx", false),
    (&["*.js"], "app.js.map", false),
    // Cheat sheet: `**.js` matches `.js` files anywhere.
    (&["**.js"], "index.js", true),
    (&["**.js"], "js/index.js", true),
    (&["**.js"], "src/js/app.js", true),
    (&["**.js"], "src/js/app.json", false),
    // Cheat sheet: `docs/*` matches files directly in `docs` only.
    (&["docs/*"], "docs/README.md", true),
    (&["docs/*"], "docs/file.txt", true),
    (&["docs/*"], "docs/mona/octocat.txt", false),
    (&["docs/*"], "other/docs/file.txt", false),
    // Cheat sheet: `docs/**` matches any file under `docs`.
    (&["docs/**"], "docs/README.md", true),
    (&["docs/**"], "docs/mona/octocat.txt", true),
    (&["docs/**"], "docsy/README.md", false),
    (&["docs/**"], "src/docs/README.md", false),
    // Cheat sheet: `docs/**/*.md` matches `.md` files anywhere under `docs`
    // (`**/` may match nothing).
    (&["docs/**/*.md"], "docs/README.md", true),
    (&["docs/**/*.md"], "docs/mona/hello-world.md", true),
    (&["docs/**/*.md"], "docs/a/markdown/file.md", true),
    (&["docs/**/*.md"], "docs/a/file.txt", false),
    (&["docs/**/*.md"], "src/docs/a.md", false),
    // Cheat sheet: `**/docs/**` matches files in any `docs` directory.
    (&["**/docs/**"], "docs/hello.md", true),
    (&["**/docs/**"], "dir/docs/my-file.txt", true),
    (&["**/docs/**"], "space/docs/plan/space.doc", true),
    (&["**/docs/**"], "mydocs/hello.md", false),
    (&["**/docs/**"], "documents/hello.md", false),
    // Cheat sheet: `**/README.md` matches README.md anywhere.
    (&["**/README.md"], "README.md", true),
    (&["**/README.md"], "js/README.md", true),
    (&["**/README.md"], "a/b/c/README.md", true),
    (&["**/README.md"], "README.markdown", false),
    (&["**/README.md"], "js/NOT-README.md", false),
    // Cheat sheet: `**/*src/**` matches files in a directory ending in `src`.
    (&["**/*src/**"], "a/src/app.js", true),
    (&["**/*src/**"], "my-src/code/js/app.js", true),
    (&["**/*src/**"], "src/app.js", true),
    (&["**/*src/**"], "a/source/app.js", false),
    (&["**/*src/**"], "a/srcs/app.js", false),
    // Cheat sheet: `**/*-post.md` matches files ending in `-post.md`.
    (&["**/*-post.md"], "my-post.md", true),
    (&["**/*-post.md"], "path/their-post.md", true),
    (&["**/*-post.md"], "path/post.md", false),
    (&["**/*-post.md"], "my-post.mdx", false),
    // Cheat sheet: `**/migrate-*.sql` matches `migrate-` ... `.sql` anywhere.
    (&["**/migrate-*.sql"], "migrate-10909.sql", true),
    (&["**/migrate-*.sql"], "db/migrate-v1.0.sql", true),
    (&["**/migrate-*.sql"], "db/sept/migrate-v1.sql", true),
    (&["**/migrate-*.sql"], "db/migrate/v1.sql", false),
    (&["**/migrate-*.sql"], "db/my-migrate-v1.sql", false),
    (&["**/migrate-*.sql"], "db/migrate-v1.sql.bak", false),
    // Cheat sheet: `*.md` then `!README.md`.
    (&["*.md", "!README.md"], "hello.md", true),
    (&["*.md", "!README.md"], "README.md", false),
    (&["*.md", "!README.md"], "docs/hello.md", false),
    // Cheat sheet: `*.md`, `!README.md`, `README*`: the last match decides.
    (&["*.md", "!README.md", "README*"], "hello.md", true),
    (&["*.md", "!README.md", "README*"], "README.md", true),
    (&["*.md", "!README.md", "README*"], "README.doc", true),
    (&["*.md", "!README.md", "README*"], "docs/README.md", false),
    // `?`: zero or one of the preceding character.
    (&["ab?c"], "ac", true),
    (&["ab?c"], "abc", true),
    (&["ab?c"], "abbc", false),
    (&["colou?r.txt"], "color.txt", true),
    (&["colou?r.txt"], "colour.txt", true),
    // `+`: one or more of the preceding character.
    (&["ab+c"], "abc", true),
    (&["ab+c"], "abbbc", true),
    (&["ab+c"], "ac", false),
    (&["v[0-9]+.txt"], "v10.txt", true),
    (&["v[0-9]+.txt"], "v.txt", false),
    // `[]`: one character of a set or range (GitHub's examples).
    (&["[CB]at"], "Cat", true),
    (&["[CB]at"], "Bat", true),
    (&["[CB]at"], "Hat", false),
    (&["[CB]at"], "cat", false),
    (&["[1-2]00"], "100", true),
    (&["[1-2]00"], "200", true),
    (&["[1-2]00"], "300", false),
    (&["[0-9a-z]"], "7", true),
    (&["[0-9a-z]"], "x", true),
    (&["[0-9a-z]"], "X", false),
    (&["[A-Z]x"], "Qx", true),
    (&["file[0-9].txt"], "file5.txt", true),
    (&["file[0-9].txt"], "file10.txt", false),
    (&["file[0-9].txt"], "filea.txt", false),
    // `\` escapes: the next character is literal.
    (&["a\\*b"], "a*b", true),
    (&["a\\*b"], "axb", false),
    (&["\\!file"], "!file", true),
    (&["\\!file"], "file", false),
    (&["a\\?"], "a?", true),
    (&["a\\?"], "a", false),
    (&["c\\+\\+/*"], "c++/main.cc", true),
    (&["c\\+\\+/*"], "c/main.cc", false),
    (&["\\[a\\]"], "[a]", true),
    (&["\\[a\\]"], "a", false),
    (&["escape\\\\backslash"], "escape\\backslash", true),
    // `.` is literal, and other regex metacharacters too.
    (&[".yml"], "fyml", false),
    (&[".yml"], ".yml", true),
    (&["*.yml"], "fyml", false),
    (&["*.yml"], "ci.yml", true),
    (&["a.b"], "axb", false),
    (&["a(b)"], "a(b)", true),
    (&["a(b)"], "ab", false),
    (&["a|b"], "a", false),
    (&["a|b"], "a|b", true),
    (&["a{2}"], "aa", false),
    (&["$HOME^"], "$HOME^", true),
    // `!` negates only as the first character.
    (&["a!b"], "a!b", true),
    // Patterns match the whole path from the repository root.
    (&["docs"], "docs", true),
    (&["docs"], "docs/a", false),
    (&["a/b"], "x/a/b", false),
    (&["a/b"], "a/b/c", false),
    (&["src"], "mysrc", false),
    (&["*.md"], "a.md.txt", false),
    (&["src/*.rs"], "src/a/b.rs", false),
    // `**/` may match nothing; `**` crosses directories.
    (&["a/**/b"], "a/b", true),
    (&["a/**/b"], "a/x/y/b", true),
    (&["a/**/b"], "ab", false),
    (&["src/**.rs"], "src/a/b.rs", true),
    (&["*feature"], "feature", true),
    // A list of only `!` patterns matches nothing.
    (&["!docs/**"], "src/main.rs", false),
    (&["!docs/**"], "docs/a.md", false),
    (&["!*.md", "!docs/**"], "x.rs", false),
    // The last matching pattern decides: exclusion, then re-inclusion.
    (
        &["docs/**", "!docs/internal/**", "docs/internal/public.md"],
        "docs/a.md",
        true,
    ),
    (
        &["docs/**", "!docs/internal/**", "docs/internal/public.md"],
        "docs/internal/secret.md",
        false,
    ),
    (
        &["docs/**", "!docs/internal/**", "docs/internal/public.md"],
        "docs/internal/public.md",
        true,
    ),
    (&["!docs/**", "docs/**"], "docs/a.md", true),
    (&["docs/**", "!docs/**"], "docs/a.md", false),
    (&["*.md", "src/**"], "src/main.rs", true),
    // Matching is case-sensitive.
    (&["README.md"], "readme.md", false),
    (&["*.MD"], "a.md", false),
    (&["Docs/**"], "docs/a.md", false),
    // Other characters are literal, including spaces and non-ASCII.
    (&["my dir/*"], "my dir/a.txt", true),
    (&["docs/ü*.md"], "docs/über.md", true),
];

#[test]
fn path_patterns_follow_the_cheat_sheet() {
    let mut failures = Vec::new();
    for &(patterns, path, expected) in PATH_CASES {
        match PatternList::new(patterns) {
            Err((index, e)) => failures.push(format!(
                "{patterns:?} on {path:?}: expected included={expected}, got a compile error at pattern {index}: {e}"
            )),
            Ok(list) => {
                let got = list.includes(path);
                if got != expected {
                    failures.push(format!(
                        "{patterns:?} on {path:?}: expected included={expected}, got {got}"
                    ));
                }
            }
        }
    }
    report("path patterns", PATH_CASES.len(), &failures);
}

// ---------------------------------------------------------------------------
// Decision tables: (filters, pushed ref, changed files, run, matched)
// `matched: None` means the case does not check it.
// ---------------------------------------------------------------------------

type DecisionCase = (
    Filters,
    &'static str,
    Changed,
    bool,
    Option<&'static [&'static str]>,
);

fn check_decisions(table: &str, cases: &[DecisionCase]) {
    let mut failures = Vec::new();
    for &(filters, push_ref, changed, run, matched) in cases {
        let case = format!("{filters:?}, push {push_ref}, changed {changed:?}");
        match run_decision(filters, push_ref, changed) {
            Err(e) => failures.push(format!("{case}: expected run={run}, got an error: {e}")),
            Ok(decision) => {
                if decision.run != run {
                    failures.push(format!(
                        "{case}: expected run={run}, got run={} (reason: {})",
                        decision.run, decision.reason
                    ));
                }
                if let Some(matched) = matched
                    && decision.matched != matched
                {
                    failures.push(format!(
                        "{case}: expected matched={matched:?}, got {:?}",
                        decision.matched
                    ));
                }
                if let Changed::Files(files) = changed
                    && decision.run
                    && !push_ref.starts_with("refs/tags/")
                    && filters.iter().any(|(key, _)| key.starts_with("paths"))
                    && decision.changed != files.len()
                {
                    failures.push(format!(
                        "{case}: expected changed={}, got {}",
                        files.len(),
                        decision.changed
                    ));
                }
                if decision.reason.trim().is_empty() {
                    failures.push(format!("{case}: the decision gives no reason"));
                }
            }
        }
    }
    report(table, cases.len(), &failures);
}

// ---------------------------------------------------------------------------
// 2. paths-ignore: skip only when EVERY changed file is ignored.
// ---------------------------------------------------------------------------

const IGNORE_DOCS: Filters = &[("paths-ignore", &["docs/**"])];
const IGNORE_DOCS_AND_MD: Filters = &[("paths-ignore", &["docs/**", "**.md"])];
const IGNORE_ROOT_MD: Filters = &[("paths-ignore", &["*.md"])];
const IGNORE_ON_MAIN: Filters = &[("branches", &["main"]), ("paths-ignore", &["docs/**"])];

const PATHS_IGNORE_CASES: &[DecisionCase] = &[
    // Every file ignored: skip.
    (
        IGNORE_DOCS,
        "refs/heads/main",
        Changed::Files(&["docs/a.md"]),
        false,
        Some(&[]),
    ),
    (
        IGNORE_DOCS,
        "refs/heads/main",
        Changed::Files(&["docs/a.md", "docs/guide/b.md", "docs/img/c.png"]),
        false,
        Some(&[]),
    ),
    (
        IGNORE_DOCS_AND_MD,
        "refs/heads/main",
        Changed::Files(&["README.md", "docs/x.txt", "src/NOTES.md"]),
        false,
        Some(&[]),
    ),
    // One file not ignored: run, and it is the one listed.
    (
        IGNORE_DOCS,
        "refs/heads/main",
        Changed::Files(&["docs/a.md", "src/main.rs"]),
        true,
        Some(&["src/main.rs"]),
    ),
    (
        IGNORE_DOCS,
        "refs/heads/main",
        Changed::Files(&["src/main.rs"]),
        true,
        Some(&["src/main.rs"]),
    ),
    (
        IGNORE_DOCS_AND_MD,
        "refs/heads/main",
        Changed::Files(&["README.md", "Dockerfile", "docs/x.txt", "src/lib.rs"]),
        true,
        Some(&["Dockerfile", "src/lib.rs"]),
    ),
    // `docs/**` does not ignore a `docs` directory elsewhere.
    (
        IGNORE_DOCS,
        "refs/heads/main",
        Changed::Files(&["web/docs/a.md"]),
        true,
        Some(&["web/docs/a.md"]),
    ),
    // `*.md` ignores root Markdown only.
    (
        IGNORE_ROOT_MD,
        "refs/heads/main",
        Changed::Files(&["CHANGELOG.md"]),
        false,
        Some(&[]),
    ),
    (
        IGNORE_ROOT_MD,
        "refs/heads/main",
        Changed::Files(&["CHANGELOG.md", "docs/readme.md"]),
        true,
        Some(&["docs/readme.md"]),
    ),
    // No changed file: does not run.
    (
        IGNORE_DOCS,
        "refs/heads/main",
        Changed::Files(&[]),
        false,
        Some(&[]),
    ),
    // Unknown changes: run (fail open).
    (IGNORE_DOCS, "refs/heads/main", Changed::Unknown, true, None),
    // With branches: both must hold.
    (
        IGNORE_ON_MAIN,
        "refs/heads/main",
        Changed::Files(&["src/main.rs"]),
        true,
        Some(&["src/main.rs"]),
    ),
    (
        IGNORE_ON_MAIN,
        "refs/heads/dev",
        Changed::Files(&["src/main.rs"]),
        false,
        None,
    ),
    (
        IGNORE_ON_MAIN,
        "refs/heads/main",
        Changed::Files(&["docs/a.md"]),
        false,
        Some(&[]),
    ),
];

#[test]
fn paths_ignore_skips_only_when_every_file_is_ignored() {
    check_decisions("paths-ignore decisions", PATHS_IGNORE_CASES);
}

// ---------------------------------------------------------------------------
// 3. paths: run when at least one changed file is included.
// ---------------------------------------------------------------------------

const PATHS_SRC: Filters = &[("paths", &["src/**"])];
const PATHS_SRC_NO_MD: Filters = &[("paths", &["src/**", "!src/**/*.md"])];
const PATHS_ONLY_NEGATED: Filters = &[("paths", &["!docs/**"])];
const PATHS_IMAGE: Filters = &[(
    "paths",
    &[
        "workspace-server/**",
        "canvas/**",
        "!**/*.md",
        "manifest.json",
    ],
)];

const PATHS_CASES: &[DecisionCase] = &[
    (
        PATHS_SRC,
        "refs/heads/main",
        Changed::Files(&["src/a.rs"]),
        true,
        Some(&["src/a.rs"]),
    ),
    (
        PATHS_SRC,
        "refs/heads/main",
        Changed::Files(&["README.md"]),
        false,
        Some(&[]),
    ),
    (
        PATHS_SRC,
        "refs/heads/main",
        Changed::Files(&["README.md", "src/a.rs", "docs/x", "src/b/c.rs"]),
        true,
        Some(&["src/a.rs", "src/b/c.rs"]),
    ),
    // An empty change list does not run.
    (
        PATHS_SRC,
        "refs/heads/main",
        Changed::Files(&[]),
        false,
        Some(&[]),
    ),
    // Unknown changes run (fail open).
    (PATHS_SRC, "refs/heads/main", Changed::Unknown, true, None),
    // A later `!` excludes.
    (
        PATHS_SRC_NO_MD,
        "refs/heads/main",
        Changed::Files(&["src/doc.md"]),
        false,
        Some(&[]),
    ),
    (
        PATHS_SRC_NO_MD,
        "refs/heads/main",
        Changed::Files(&["src/doc.md", "src/lib.rs"]),
        true,
        Some(&["src/lib.rs"]),
    ),
    // Only `!` patterns: nothing is included, so nothing runs.
    (
        PATHS_ONLY_NEGATED,
        "refs/heads/main",
        Changed::Files(&["src/main.rs"]),
        false,
        Some(&[]),
    ),
    // Exclusion then re-inclusion (`manifest.json` comes after `!**/*.md`).
    (
        PATHS_IMAGE,
        "refs/heads/main",
        Changed::Files(&["canvas/README.md", "workspace-server/docs/x.md"]),
        false,
        Some(&[]),
    ),
    (
        PATHS_IMAGE,
        "refs/heads/main",
        Changed::Files(&["canvas/README.md", "manifest.json", "go.sum"]),
        true,
        Some(&["manifest.json"]),
    ),
    (
        PATHS_IMAGE,
        "refs/heads/main",
        Changed::Files(&["workspace-server/cmd/main.go"]),
        true,
        Some(&["workspace-server/cmd/main.go"]),
    ),
];

#[test]
fn paths_run_when_any_file_is_included() {
    check_decisions("paths decisions", PATHS_CASES);
}

// ---------------------------------------------------------------------------
// 4. Branches and tags.
// ---------------------------------------------------------------------------

const SRC_CHANGE: Changed = Changed::Files(&["src/main.rs"]);
const DOC_CHANGE: Changed = Changed::Files(&["docs/a.md"]);

const BRANCH_FEATURE_STAR: Filters = &[("branches", &["feature/*"])];
const BRANCH_FEATURE_STARSTAR: Filters = &[("branches", &["feature/**"])];
const BRANCH_NAMES: Filters = &[("branches", &["main", "releases/mona-the-octocat"])];
const BRANCH_STAR: Filters = &[("branches", &["*"])];
const BRANCH_STARSTAR: Filters = &[("branches", &["**"])];
const BRANCH_STAR_FEATURE: Filters = &[("branches", &["*feature"])];
const BRANCH_RELEASES: Filters = &[("branches", &["releases/**", "!releases/**-alpha"])];
const BRANCH_IGNORE: Filters = &[("branches-ignore", &["mona/octocat", "releases/**-alpha"])];
const TAG_V2: Filters = &[("tags", &["v2*"])];
const TAG_SEMVER: Filters = &[("tags", &["v[12].[0-9]+.[0-9]+"])];
const TAG_STAR: Filters = &[("tags", &["*"])];
const TAG_STARSTAR: Filters = &[("tags", &["**"])];
const TAG_IGNORE: Filters = &[("tags-ignore", &["v2", "v1.*"])];
const TAGS_WITH_PATHS: Filters = &[("tags", &["v*"]), ("paths", &["src/**"])];
const ONLY_PATHS: Filters = &[("paths", &["src/**"])];
const BRANCHES_AND_TAGS: Filters = &[("branches", &["main"]), ("tags", &["v*"])];
const MAIN_AND_PATHS: Filters = &[("branches", &["main"]), ("paths", &["src/**"])];

const REF_CASES: &[DecisionCase] = &[
    // `feature/*`: one level under feature/.
    (
        BRANCH_FEATURE_STAR,
        "refs/heads/feature/my-branch",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_FEATURE_STAR,
        "refs/heads/feature/your-branch",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_FEATURE_STAR,
        "refs/heads/feature/beta-a/my-branch",
        SRC_CHANGE,
        false,
        None,
    ),
    (
        BRANCH_FEATURE_STAR,
        "refs/heads/main",
        SRC_CHANGE,
        false,
        None,
    ),
    // `feature/**`: any depth under feature/.
    (
        BRANCH_FEATURE_STARSTAR,
        "refs/heads/feature/beta-a/my-branch",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_FEATURE_STARSTAR,
        "refs/heads/feature/your-branch",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_FEATURE_STARSTAR,
        "refs/heads/feature/mona/the/octocat",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_FEATURE_STARSTAR,
        "refs/heads/features/x",
        SRC_CHANGE,
        false,
        None,
    ),
    // Exact names.
    (BRANCH_NAMES, "refs/heads/main", SRC_CHANGE, true, None),
    (
        BRANCH_NAMES,
        "refs/heads/releases/mona-the-octocat",
        SRC_CHANGE,
        true,
        None,
    ),
    (BRANCH_NAMES, "refs/heads/mainline", SRC_CHANGE, false, None),
    (
        BRANCH_NAMES,
        "refs/heads/releases/mona",
        SRC_CHANGE,
        false,
        None,
    ),
    // `'*'`: names without `/`; `'**'`: every name.
    (BRANCH_STAR, "refs/heads/main", SRC_CHANGE, true, None),
    (BRANCH_STAR, "refs/heads/releases", SRC_CHANGE, true, None),
    (
        BRANCH_STAR,
        "refs/heads/releases/v1",
        SRC_CHANGE,
        false,
        None,
    ),
    (
        BRANCH_STARSTAR,
        "refs/heads/all/the/branches",
        SRC_CHANGE,
        true,
        None,
    ),
    (BRANCH_STARSTAR, "refs/heads/main", SRC_CHANGE, true, None),
    // `'*feature'`.
    (
        BRANCH_STAR_FEATURE,
        "refs/heads/mona-feature",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_STAR_FEATURE,
        "refs/heads/feature",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_STAR_FEATURE,
        "refs/heads/ver-10-feature",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_STAR_FEATURE,
        "refs/heads/feature-x",
        SRC_CHANGE,
        false,
        None,
    ),
    (
        BRANCH_STAR_FEATURE,
        "refs/heads/a/feature",
        SRC_CHANGE,
        false,
        None,
    ),
    // GitHub's `branches` example with a `!` exclusion.
    (
        BRANCH_RELEASES,
        "refs/heads/releases/10",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_RELEASES,
        "refs/heads/releases/beta/mona",
        SRC_CHANGE,
        true,
        None,
    ),
    (
        BRANCH_RELEASES,
        "refs/heads/releases/10-alpha",
        SRC_CHANGE,
        false,
        None,
    ),
    (
        BRANCH_RELEASES,
        "refs/heads/releases/beta/3-alpha",
        SRC_CHANGE,
        false,
        None,
    ),
    // GitHub's `branches-ignore` example.
    (
        BRANCH_IGNORE,
        "refs/heads/mona/octocat",
        SRC_CHANGE,
        false,
        None,
    ),
    (
        BRANCH_IGNORE,
        "refs/heads/releases/10-alpha",
        SRC_CHANGE,
        false,
        None,
    ),
    (
        BRANCH_IGNORE,
        "refs/heads/releases/beta/3-alpha",
        SRC_CHANGE,
        false,
        None,
    ),
    (BRANCH_IGNORE, "refs/heads/main", SRC_CHANGE, true, None),
    (
        BRANCH_IGNORE,
        "refs/heads/releases/10",
        SRC_CHANGE,
        true,
        None,
    ),
    // Tags: `v2*`.
    (TAG_V2, "refs/tags/v2", SRC_CHANGE, true, None),
    (TAG_V2, "refs/tags/v2.0", SRC_CHANGE, true, None),
    (TAG_V2, "refs/tags/v2.9", SRC_CHANGE, true, None),
    (TAG_V2, "refs/tags/v1.0", SRC_CHANGE, false, None),
    // Tags: `v[12].[0-9]+.[0-9]+`.
    (TAG_SEMVER, "refs/tags/v1.10.1", SRC_CHANGE, true, None),
    (TAG_SEMVER, "refs/tags/v2.0.0", SRC_CHANGE, true, None),
    (TAG_SEMVER, "refs/tags/v3.0.0", SRC_CHANGE, false, None),
    (TAG_SEMVER, "refs/tags/v2.0", SRC_CHANGE, false, None),
    (TAG_SEMVER, "refs/tags/v1x0.0", SRC_CHANGE, false, None),
    (TAG_SEMVER, "refs/tags/v1.0.0-rc1", SRC_CHANGE, false, None),
    // Tags: `'*'` and `'**'`.
    (TAG_STAR, "refs/tags/v1", SRC_CHANGE, true, None),
    (TAG_STAR, "refs/tags/every/tag", SRC_CHANGE, false, None),
    (TAG_STARSTAR, "refs/tags/every/tag", SRC_CHANGE, true, None),
    // GitHub's `tags-ignore` example.
    (TAG_IGNORE, "refs/tags/v2", SRC_CHANGE, false, None),
    (TAG_IGNORE, "refs/tags/v1.9.1", SRC_CHANGE, false, None),
    (TAG_IGNORE, "refs/tags/v3", SRC_CHANGE, true, None),
    (TAG_IGNORE, "refs/tags/v2.0", SRC_CHANGE, true, None),
    // Only tags defined: branch pushes do not run, and vice versa.
    (TAG_V2, "refs/heads/main", SRC_CHANGE, false, None),
    (TAG_IGNORE, "refs/heads/main", SRC_CHANGE, false, None),
    (BRANCH_STARSTAR, "refs/tags/v1.0.0", SRC_CHANGE, false, None),
    (BRANCH_IGNORE, "refs/tags/v1.0.0", SRC_CHANGE, false, None),
    // Both kinds defined: each applies to its own kind of push.
    (BRANCHES_AND_TAGS, "refs/heads/main", SRC_CHANGE, true, None),
    (
        BRANCHES_AND_TAGS,
        "refs/tags/v1.0.0",
        SRC_CHANGE,
        true,
        None,
    ),
    (BRANCHES_AND_TAGS, "refs/heads/dev", SRC_CHANGE, false, None),
    (
        BRANCHES_AND_TAGS,
        "refs/tags/release-1",
        SRC_CHANGE,
        false,
        None,
    ),
    // Path filters are not evaluated for tag pushes.
    (TAGS_WITH_PATHS, "refs/tags/v1.0.0", DOC_CHANGE, true, None),
    (
        TAGS_WITH_PATHS,
        "refs/tags/v1.0.0",
        Changed::Files(&[]),
        true,
        None,
    ),
    (TAGS_WITH_PATHS, "refs/tags/x1.0.0", SRC_CHANGE, false, None),
    (ONLY_PATHS, "refs/tags/v1.0.0", DOC_CHANGE, true, None),
    // Branches and paths must both hold.
    (
        MAIN_AND_PATHS,
        "refs/heads/main",
        SRC_CHANGE,
        true,
        Some(&["src/main.rs"]),
    ),
    (
        MAIN_AND_PATHS,
        "refs/heads/main",
        DOC_CHANGE,
        false,
        Some(&[]),
    ),
    (MAIN_AND_PATHS, "refs/heads/dev", SRC_CHANGE, false, None),
    (MAIN_AND_PATHS, "refs/heads/dev", DOC_CHANGE, false, None),
];

#[test]
fn branch_and_tag_filters_follow_the_cheat_sheet() {
    check_decisions("branch and tag decisions", REF_CASES);
}

#[test]
fn push_refs_parse_into_branches_and_tags() {
    let cases: &[(&str, Option<PushRef>)] = &[
        ("refs/heads/main", Some(PushRef::Branch("main".into()))),
        (
            "refs/heads/feature/x",
            Some(PushRef::Branch("feature/x".into())),
        ),
        ("refs/tags/v1.2.3", Some(PushRef::Tag("v1.2.3".into()))),
        (
            "refs/tags/every/tag",
            Some(PushRef::Tag("every/tag".into())),
        ),
        ("refs/pull/1/merge", None),
    ];
    let mut failures = Vec::new();
    for (reference, expected) in cases {
        let got = PushRef::parse(reference).ok();
        if &got != expected {
            failures.push(format!("{reference:?}: expected {expected:?}, got {got:?}"));
        }
    }
    report("push refs", cases.len(), &failures);
}

// ---------------------------------------------------------------------------
// 5. Errors.
// ---------------------------------------------------------------------------

/// Workflows whose push trigger cannot compile: (filters, words the error
/// must name).
const TRIGGER_ERRORS: &[(Filters, &[&str])] = &[
    (
        &[("paths", &["src/**"]), ("paths-ignore", &["docs/**"])],
        &["paths", "paths-ignore"],
    ),
    (
        &[("branches", &["main"]), ("branches-ignore", &["dev"])],
        &["branches", "branches-ignore"],
    ),
    (
        &[("tags", &["v*"]), ("tags-ignore", &["v0*"])],
        &["tags", "tags-ignore"],
    ),
    (&[("paths", &["src/**", "[abc"])], &["[abc"]),
    (&[("branches", &["release/[]"])], &["release/[]"]),
    (&[("tags", &["v[a-9]"])], &["v[a-9]"]),
    (&[("paths-ignore", &["docs\\"])], &["docs\\"]),
];

/// Patterns that must not compile.
const INVALID_PATTERNS: &[&str] = &[
    "",
    "[]",
    "a[]b",
    "[abc",
    "src/[0-9",
    "[a-9]",
    "[0-z]",
    "[z-a]",
    "[9-0]",
    "trailing\\",
    "a*+",
    "a**+",
    "![]",
];

#[test]
fn invalid_filters_are_errors() {
    let mut failures = Vec::new();
    for &(filters, words) in TRIGGER_ERRORS {
        let yaml = workflow_yaml(filters);
        let workflow = match Workflow::parse(Path::new("w.yml"), &yaml) {
            Ok(w) => w,
            Err(e) => {
                failures.push(format!(
                    "{filters:?}: the YAML itself should parse (the error belongs to Trigger::of), got: {e}"
                ));
                continue;
            }
        };
        match Trigger::of(&workflow) {
            Ok(_) => failures.push(format!(
                "{filters:?}: expected Trigger::of to fail, it compiled"
            )),
            Err(e) => {
                let text = e.to_string();
                for word in words {
                    if !text.contains(word) {
                        failures.push(format!(
                            "{filters:?}: the error should name {word:?}, got: {text}"
                        ));
                    }
                }
                if e.exit_code() != hoist::error::EXIT_INPUT {
                    failures.push(format!(
                        "{filters:?}: a bad workflow is an input error (exit {}), got exit {}",
                        hoist::error::EXIT_INPUT,
                        e.exit_code()
                    ));
                }
            }
        }
    }
    for &pattern in INVALID_PATTERNS {
        if let Ok(p) = Pattern::new(pattern) {
            failures.push(format!(
                "Pattern::new({pattern:?}): expected an error, it compiled ({p:?})"
            ));
        }
        match PatternList::new(&["ok/**", pattern]) {
            Ok(_) => failures.push(format!(
                "PatternList::new([\"ok/**\", {pattern:?}]): expected an error, it compiled"
            )),
            Err((index, _)) if index != 1 => failures.push(format!(
                "PatternList::new([\"ok/**\", {pattern:?}]): the error should name pattern 1, got {index}"
            )),
            Err(_) => {}
        }
    }
    report(
        "errors",
        TRIGGER_ERRORS.len() + INVALID_PATTERNS.len(),
        &failures,
    );
}

// ---------------------------------------------------------------------------
// 6. The Gitea dialect: whole `on:` blocks decided as Gitea's
//    `matchPushEvent` does (modules/actions/workflows.go), on act's
//    `Skip`/`Filter` and the act fork's `ParseRawOn`. Each case is
//    (on: block, ref, changed files, GitHub runs, Gitea runs); the GitHub
//    column is `None` where GitHub rejects the workflow.
// ---------------------------------------------------------------------------

type DialectCase = (&'static str, &'static str, Changed, Option<bool>, bool);

const DIALECT_CASES: &[DialectCase] = &[
    // A `!` in `paths-ignore`: Filter ignores build.yml through `.github/**`.
    (
        "push:\n    paths-ignore: ['.github/**', '!.github/workflows/build.yml']",
        "refs/heads/main",
        Changed::Files(&[".github/workflows/build.yml"]),
        Some(true),
        false,
    ),
    // ... and every file outside `.github` through the `!` item.
    (
        "push:\n    paths-ignore: ['.github/**', '!.github/workflows/build.yml']",
        "refs/heads/main",
        Changed::Files(&["src/main.rs"]),
        Some(true),
        false,
    ),
    // A `!` in `branches-ignore`: every branch is ignored on Gitea.
    (
        "push:\n    branches-ignore: ['release/**', '!release/keep']",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(true),
        false,
    ),
    (
        "push:\n    branches-ignore: ['release/**', '!release/keep']",
        "refs/heads/release/keep",
        Changed::Files(&["a"]),
        Some(true),
        false,
    ),
    (
        "push:\n    branches-ignore: ['release/**']",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(true),
        true,
    ),
    // Unknown keys: GitHub ignores them, Gitea never matches them.
    (
        "push:\n    branch: main",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(true),
        false,
    ),
    (
        "push:\n    branches: [main]\n    paths_ignored: ['docs/**']",
        "refs/heads/main",
        Changed::Files(&["src/a"]),
        Some(true),
        false,
    ),
    // A merge key makes the workflow invalid to Gitea.
    (
        "push:\n    <<: {branches: [main]}",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(true),
        false,
    ),
    // A null filter is one empty pattern to Gitea: it matches no branch...
    (
        "push:\n    branches:",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(false),
        false,
    ),
    // ... and ignores none.
    (
        "push:\n    branches-ignore:",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(true),
        true,
    ),
    // An empty list: Skip lets everything through on Gitea.
    (
        "push:\n    paths: []",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(false),
        true,
    ),
    // Both kinds of ref filter: one unmet condition is excused.
    (
        "push:\n    branches: [main]\n    tags: ['v*']",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(true),
        true,
    ),
    (
        "push:\n    branches: [main]\n    tags: ['v*']",
        "refs/tags/v1",
        Changed::Files(&["a"]),
        Some(true),
        true,
    ),
    (
        "push:\n    branches: [main]\n    tags: ['v*']",
        "refs/heads/dev",
        Changed::Files(&["a"]),
        Some(false),
        false,
    ),
    // Only one kind: the other kind of push does not run.
    (
        "push:\n    tags: ['v*']",
        "refs/heads/main",
        Changed::Files(&["a"]),
        Some(false),
        false,
    ),
    // A list and its `-ignore` form: GitHub rejects, Gitea wants both.
    (
        "push:\n    branches: ['**']\n    branches-ignore: [dev]",
        "refs/heads/main",
        Changed::Files(&["a"]),
        None,
        true,
    ),
    (
        "push:\n    branches: ['**']\n    branches-ignore: [dev]",
        "refs/heads/dev",
        Changed::Files(&["a"]),
        None,
        false,
    ),
    // ... and with a tag filter too, the one excused condition is not
    // enough for a branch push when both tag keys are unmet.
    (
        "push:\n    branches: ['**']\n    tags: ['v*']\n    tags-ignore: [v0]",
        "refs/heads/main",
        Changed::Files(&["a"]),
        None,
        false,
    ),
    // A pattern that does not compile leaves its condition unmet; on a
    // kind of push it does not apply to, it is excused.
    (
        "push:\n    branches: [main]\n    tags: ['[z-a]']",
        "refs/tags/v1",
        Changed::Files(&["a"]),
        None,
        false,
    ),
    (
        "push:\n    branches: [main]\n    tags: ['[z-a]']",
        "refs/heads/main",
        Changed::Files(&["a"]),
        None,
        true,
    ),
    // Path filters do not apply to tag pushes (Gitea 1.24.1 and later).
    (
        "push:\n    paths: ['src/**']",
        "refs/tags/v1",
        Changed::Files(&["docs/a.md"]),
        Some(true),
        true,
    ),
    // A push that changed nothing does not run with path filters.
    (
        "push:\n    paths-ignore: ['docs/**']",
        "refs/heads/main",
        Changed::Files(&[]),
        Some(false),
        false,
    ),
    // No filters: every push runs; `push:` null too.
    (
        "push:",
        "refs/heads/x",
        Changed::Files(&["a"]),
        Some(true),
        true,
    ),
    // Pattern level: Go reads `[a-c-e]` as a-c, `-` and `e`.
    (
        "push:\n    branches: ['v[a-c-e]']",
        "refs/heads/vd",
        Changed::Files(&["a"]),
        Some(true),
        false,
    ),
    (
        "push:\n    branches: ['v[a-c-e]']",
        "refs/heads/v-",
        Changed::Files(&["a"]),
        Some(false),
        true,
    ),
    // Pattern level: Go's `.` does not match a newline, so `**` stops there.
    (
        "push:\n    paths: ['docs/**']",
        "refs/heads/main",
        Changed::Files(&["docs/line\nbreak"]),
        Some(true),
        false,
    ),
];

#[test]
fn gitea_decides_as_its_code_does() {
    use hoist::changes::Dialect;
    let mut failures = Vec::new();
    for &(on, push_ref, changed, github, gitea) in DIALECT_CASES {
        let yaml = format!("on:\n  {on}\njobs: {{}}\n");
        let workflow = match Workflow::parse(Path::new("w.yml"), &yaml) {
            Ok(w) => w,
            Err(e) => {
                failures.push(format!("{on:?}: does not parse: {e}"));
                continue;
            }
        };
        let push_ref = PushRef::parse(push_ref).unwrap();
        let files = changed.to_changed_files();
        for (dialect, want) in [(Dialect::Github, github), (Dialect::Gitea, Some(gitea))] {
            let got = Trigger::with_dialect(&workflow, dialect)
                .and_then(|t| decide(&t, Some(&push_ref), &files))
                .map(|d| (d.run, d.reason, d.dialect));
            match (got, want) {
                (Ok((run, reason, decided)), Some(want)) => {
                    if run != want || decided != dialect {
                        failures.push(format!(
                            "{on:?} {push_ref:?} {changed:?}: {dialect} runs={run}, want {want} ({reason})"
                        ));
                    }
                    if dialect == Dialect::Gitea && !reason.starts_with("Gitea: ") {
                        failures.push(format!("{on:?}: the reason should name Gitea: {reason}"));
                    }
                }
                (Err(_), None) => {}
                (Ok((run, reason, _)), None) => failures.push(format!(
                    "{on:?}: {dialect} should reject the workflow, it decided run={run} ({reason})"
                )),
                (Err(e), Some(_)) => failures.push(format!("{on:?}: {dialect} failed: {e}")),
            }
        }
    }
    report("gitea", DIALECT_CASES.len(), &failures);
}

/// An empty `paths` list runs on Gitea, and the reason says why rather
/// than that no file matched.
#[test]
fn an_empty_list_on_gitea_says_it_never_skips() {
    use hoist::changes::Dialect;
    let workflow = Workflow::parse(
        Path::new("w.yml"),
        "on:\n  push:\n    paths: []\njobs: {}\n",
    )
    .unwrap();
    let push_ref = PushRef::parse("refs/heads/main").unwrap();
    let files = Changed::Files(&["a"]).to_changed_files();
    let decision = Trigger::with_dialect(&workflow, Dialect::Gitea)
        .and_then(|t| decide(&t, Some(&push_ref), &files))
        .unwrap();
    assert!(decision.run);
    assert!(
        decision.reason.contains("empty list, which never skips"),
        "{}",
        decision.reason
    );
}

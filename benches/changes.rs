//! How long `hoist changes` takes to decide a huge push: 100,000 changed
//! paths against a 50-pattern `on.push.paths` list shaped like a monorepo's.
//!
//! Inputs are generated deterministically (an LCG, no `rand`), and the
//! patterns are compiled once, outside the timed loops:
//!
//! - `changes/compile_50_patterns`: compiling the list alone;
//! - `changes/includes_100k_paths`: `PatternList::includes` on every path;
//! - `changes/decide_100k_paths`: the whole decision, from a `Trigger` read
//!   from workflow YAML, on `ChangedFiles::Known` for a push of `main`.

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use hoist::changes::{ChangedFiles, PushRef, Trigger, decide};
use hoist::pattern::PatternList;
use hoist::workflow::Workflow;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const PATHS: usize = 100_000;

/// A monorepo's `paths` filter: services, shared libraries, build files,
/// then exclusions (docs, tests, assets) and a few re-inclusions after them.
/// The last matching pattern decides.
const PATTERNS: [&str; 50] = [
    "workspace-server/**",
    "canvas/**",
    "web/src/**",
    "mobile/**",
    "api-gateway/**",
    "auth/**/*.go",
    "billing/**/*.py",
    "billing/v[0-9]/**",
    "notifications/src/**",
    "search/**/*.rs",
    "analytics/**/*.sql",
    "libs/core/**",
    "libs/ui/**/*.tsx",
    "libs/ui/**/*.ts",
    "proto/**/*.proto",
    "infra/terraform/**/*.tf",
    "infra/helm/**",
    "scripts/deploy/*.sh",
    "scripts/ci/*.sh",
    "deploy/**/Dockerfile",
    "**/Dockerfile",
    "*.json",
    "**/package.json",
    "**/Cargo.toml",
    "**/go.mod",
    "**/requirements*.txt",
    "**/migrate-*.sql",
    "config/*.yml",
    "config/**/*.yaml",
    ".github/workflows/*.yml",
    "e2e/**",
    "tools/codegen/**",
    "!**/*.md",
    "!docs/**",
    "!**/*_test.go",
    "!**/*.test.ts",
    "!**/__snapshots__/**",
    "!**/testdata/**",
    "!e2e/fixtures/**",
    "!canvas/storybook/**",
    "!**/.eslintrc*",
    "!**/*.png",
    "!**/*.svg",
    "!web/public/**",
    "!**/node_modules/**",
    "!**/vendor/**",
    "docs/api/**/*.yaml",
    "**/openapi.ya?ml",
    "canvas/storybook/config/**",
    "**/migrations/**/*.sql",
];

const TOP: [&str; 20] = [
    "workspace-server",
    "canvas",
    "web",
    "mobile",
    "api-gateway",
    "auth",
    "billing",
    "notifications",
    "search",
    "analytics",
    "libs",
    "proto",
    "infra",
    "scripts",
    "deploy",
    "config",
    "docs",
    "tools",
    "e2e",
    ".github",
];

const DIRS: [&str; 32] = [
    "src",
    "lib",
    "internal",
    "cmd",
    "pkg",
    "api",
    "handlers",
    "models",
    "components",
    "pages",
    "utils",
    "core",
    "ui",
    "v1",
    "v2",
    "migrations",
    "tests",
    "testdata",
    "__snapshots__",
    "fixtures",
    "storybook",
    "config",
    "public",
    "assets",
    "terraform",
    "helm",
    "deploy",
    "ci",
    "workflows",
    "node_modules",
    "vendor",
    "codegen",
];

const FILES: [&str; 36] = [
    "main.go",
    "handler.go",
    "handler_test.go",
    "index.ts",
    "App.tsx",
    "Button.tsx",
    "button.test.ts",
    "lib.rs",
    "mod.rs",
    "app.py",
    "models.py",
    "README.md",
    "CHANGELOG.md",
    "Dockerfile",
    "package.json",
    "Cargo.toml",
    "go.mod",
    "requirements.txt",
    "requirements-dev.txt",
    "migrate-0042.sql",
    "schema.sql",
    "report.sql",
    "logo.png",
    "icon.svg",
    "deploy.sh",
    "values.yaml",
    "openapi.yaml",
    "openapi.yml",
    "settings.yml",
    "main.tf",
    "events.proto",
    "style.css",
    ".eslintrc.json",
    "snapshot.snap",
    "data.json",
    "notes.txt",
];

/// A 64-bit LCG (Knuth's MMIX constants); the high bits are the good ones.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// `count` changed paths, 3 to 6 segments deep: a top-level directory, 1 to
/// 4 directories, and a file, one in four numbered so that names vary.
fn changed_paths(count: usize) -> Vec<String> {
    let mut lcg = Lcg(0x5eed);
    (0..count)
        .map(|_| {
            let mut path = String::from(TOP[lcg.below(TOP.len())]);
            for _ in 0..1 + lcg.below(4) {
                path.push('/');
                path.push_str(DIRS[lcg.below(DIRS.len())]);
            }
            path.push('/');
            let file = FILES[lcg.below(FILES.len())];
            if lcg.below(4) == 0 {
                path.push_str(&format!("{}-{}", lcg.below(1000), file));
            } else {
                path.push_str(file);
            }
            path
        })
        .collect()
}

/// The workflow a monorepo would have, with the patterns under
/// `on.push.paths`.
fn workflow_yaml() -> String {
    let mut text = String::from(
        "name: publish\n\non:\n  push:\n    branches: [main, 'release/*']\n    paths:\n",
    );
    for pattern in PATTERNS {
        text.push_str(&format!("      - '{pattern}'\n"));
    }
    text.push_str(
        "  workflow_dispatch:\n\njobs:\n  publish:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n",
    );
    text
}

fn bench_changes(c: &mut Criterion) {
    let paths = changed_paths(PATHS);
    let list = PatternList::new(&PATTERNS).expect("the patterns compile");
    let included = paths.iter().filter(|p| list.includes(p)).count();
    eprintln!(
        "{} paths, {} patterns ({} negated): {} included ({:.1}%)",
        paths.len(),
        PATTERNS.len(),
        PATTERNS.iter().filter(|p| p.starts_with('!')).count(),
        included,
        100.0 * included as f64 / paths.len() as f64
    );

    let workflow =
        Workflow::parse(Path::new("publish.yml"), &workflow_yaml()).expect("the workflow parses");
    let trigger = Trigger::of(&workflow).expect("the trigger compiles");
    let push_ref = PushRef::Branch("main".to_string());
    let changed = ChangedFiles::Known(paths.clone());
    let decision = decide(&trigger, Some(&push_ref), &changed).expect("decides");
    assert!(decision.run);
    assert_eq!(decision.matched.len(), included);

    let mut group = c.benchmark_group("changes");

    group.bench_function("compile_50_patterns", |b| {
        b.iter(|| PatternList::new(black_box(&PATTERNS)).expect("the patterns compile"));
    });

    // One iteration decides 100,000 paths, about a second at the time of
    // writing: flat sampling, one iteration per sample and 10 samples keep
    // the whole run under a minute. Criterion warns that it cannot complete
    // 10 samples in 5 s; it takes the 10 anyway, one iteration each.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(PATHS as u64));

    group.bench_function("includes_100k_paths", |b| {
        b.iter(|| {
            let count = black_box(&paths)
                .iter()
                .filter(|p| list.includes(p))
                .count();
            black_box(count)
        });
    });

    group.bench_function("decide_100k_paths", |b| {
        b.iter(|| decide(&trigger, Some(black_box(&push_ref)), black_box(&changed)));
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench_changes
}
criterion_main!(benches);

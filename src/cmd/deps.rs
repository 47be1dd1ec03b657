//! `hoist deps`: pre-clone the manifest's git dependencies.

use crate::ci::{self, Ci, markdown, markdown_code};
use crate::cli::{DepsArgs, Format};
use crate::config::{Config, Overrides};
use crate::deps::{self, Options, Outcome, Report};
use crate::error::{Error, Result};
use crate::manifest;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

pub fn run(dir: &Path, config_file: Option<&Path>, args: DepsArgs, ci: &Ci) -> Result<u8> {
    let overrides = Overrides {
        manifest: args.manifest,
        bundle_dir: args.out,
        base_url: args.base_url,
        token_env: args.token_env,
        ..Overrides::default()
    };
    let config = Config::load(dir, config_file, overrides, |name| std::env::var(name).ok())?;
    // As publish does: the runner masks the tokens before a git error could
    // quote one.
    super::publish::mask_secrets(&config, ci, &|name: &str| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    });
    let dependencies = manifest::read(&config.manifest)?;
    let jobs = deps::plan(dependencies, &config.git, &config.bundle_dir)?;
    let options = Options {
        jobs: usize::from(args.jobs),
        tolerant: args.tolerant,
    };

    let started = Instant::now();
    let mut progress = Progress::new(jobs.len(), args.format == Format::Text);
    let reports = deps::fetch_all(&jobs, &options, |report| progress.finished(report, ci));
    progress.clear();
    let counts = Counts::of(&reports);
    let seconds = started.elapsed().as_secs_f64();

    match args.format {
        Format::Text => ci.out(&format!("{}\n", counts.summary(seconds)))?,
        Format::Json => {
            let document = Document {
                dependencies: &reports,
                counts: &counts,
                seconds,
            };
            ci.out(&super::json(&document))?;
        }
    }
    for (name, count) in counts.named() {
        ci.set_output(name, &count.to_string())?;
    }
    ci.add_summary(&summary(&reports, &counts, seconds))?;

    let failed: Vec<&Report> = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .collect();
    if failed.is_empty() {
        return Ok(0);
    }
    let mut error = Error::failed(format!(
        "{} of {} dependencies failed",
        failed.len(),
        reports.len()
    ));
    for report in failed {
        error = error.caused_by(format!(
            "{} ({}@{}): {}",
            path_of(report),
            report.repo,
            report.git_ref,
            report.message.as_deref().unwrap_or("unknown failure")
        ));
    }
    Err(error.hint("fix the entries above; everything else was fetched (re-running reuses it)"))
}

#[derive(Serialize)]
struct Document<'a> {
    dependencies: &'a [Report],
    #[serde(flatten)]
    counts: &'a Counts,
    seconds: f64,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    cloned: usize,
    reused: usize,
    skipped: usize,
    failed: usize,
}

impl Counts {
    fn of(reports: &[Report]) -> Counts {
        let count = |outcome| reports.iter().filter(|r| r.outcome == outcome).count();
        Counts {
            cloned: count(Outcome::Cloned),
            reused: count(Outcome::Reused),
            skipped: count(Outcome::Skipped),
            failed: count(Outcome::Failed),
        }
    }

    fn named(&self) -> [(&'static str, usize); 4] {
        [
            ("cloned", self.cloned),
            ("reused", self.reused),
            ("skipped", self.skipped),
            ("failed", self.failed),
        ]
    }

    fn summary(&self, seconds: f64) -> String {
        let total = self.cloned + self.reused + self.skipped + self.failed;
        format!(
            "{total} dependencies: {} cloned, {} reused, {} skipped, {} failed in {seconds:.2} s",
            self.cloned, self.reused, self.skipped, self.failed
        )
    }
}

/// `<category dir>/<name>`, as the bundle dir lays it out.
fn path_of(report: &Report) -> String {
    format!("{}/{}", report.category.dir(), report.name)
}

fn line(report: &Report) -> String {
    let outcome = report.outcome.as_str();
    let source = format!("{}@{}", report.repo, report.git_ref);
    match (&report.commit, &report.message) {
        (Some(commit), _) => format!(
            "{outcome:<8} {:<40} {source} {} ({:.2} s)",
            path_of(report),
            &commit[..commit.len().min(7)],
            report.seconds
        ),
        (None, message) => format!(
            "{outcome:<8} {:<40} {source}: {}",
            path_of(report),
            message.as_deref().unwrap_or("")
        ),
    }
}

/// A line per dependency as it finishes, with a progress bar on a
/// terminal; plain lines in CI or when output is piped.
struct Progress {
    total: usize,
    done: usize,
    lines: bool,
    bar: bool,
}

impl Progress {
    fn new(total: usize, lines: bool) -> Progress {
        let bar = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Progress {
            total,
            done: 0,
            lines,
            bar,
        }
    }

    fn finished(&mut self, report: &Report, ci: &Ci) {
        self.done += 1;
        self.clear();
        if self.lines {
            let _ = ci.out(&format!("{}\n", ci::one_line(&line(report))));
        }
        if report.outcome == Outcome::Skipped {
            let message = format!(
                "skipped {}: {}",
                path_of(report),
                report.message.as_deref().unwrap_or("")
            );
            ci.warn(&message);
        }
        if self.bar {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            eprint!(
                "\r[{}{}] {}/{}",
                "=".repeat(filled),
                " ".repeat(width - filled),
                self.done,
                self.total
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn clear(&self) {
        if self.bar {
            eprint!("\r\x1b[K");
        }
    }
}

fn summary(reports: &[Report], counts: &Counts, seconds: f64) -> String {
    let mut out = format!("### hoist deps\n\n{}\n\n", counts.summary(seconds));
    out.push_str("| dependency | repo | ref | commit | outcome |\n|---|---|---|---|---|\n");
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            markdown_code(&path_of(r)),
            markdown(&r.repo),
            markdown_code(&r.git_ref),
            markdown_code(r.commit.as_deref().map_or("", |c| &c[..c.len().min(7)])),
            r.outcome.as_str()
        ));
    }
    out.push('\n');
    out
}

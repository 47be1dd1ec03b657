//! An image build's progress, as readable lines.
//!
//! The engine reports a BuildKit build as a stream of status messages
//! (vertices that start, log, finish, fail) and a classic build as text
//! (`Step 2/5 : RUN …`). Both become the plain lines `docker build
//! --progress=plain` prints, and this module remembers what a failure report
//! needs: the failing Dockerfile step and the last lines of output.

use bollard::moby::buildkit::v1::StatusResponse;
use std::collections::{HashMap, VecDeque};

/// How many lines of output a failure report shows.
pub const TAIL_LINES: usize = 20;

/// One build's progress; feed it the engine's messages, print what it returns.
#[derive(Debug, Default)]
pub struct BuildLog {
    /// BuildKit vertices by digest, numbered in the order they appeared.
    vertices: HashMap<String, Vertex>,
    /// The last lines of output, for a failure report.
    tail: VecDeque<String>,
    /// The step being run (classic) or the one that failed (BuildKit).
    step: Option<String>,
    failed_step: Option<String>,
    /// Dockerfile steps seen, and how many of them came from the cache.
    pub steps: usize,
    pub cached: usize,
}

#[derive(Debug)]
struct Vertex {
    number: usize,
    name: String,
    started: bool,
    done: bool,
}

impl BuildLog {
    /// The lines for one BuildKit status message.
    pub fn buildkit(&mut self, status: &StatusResponse) -> Vec<String> {
        let mut lines = Vec::new();
        for vertex in &status.vertexes {
            let next = self.vertices.len() + 1;
            let known = self
                .vertices
                .entry(vertex.digest.clone())
                .or_insert_with(|| Vertex {
                    number: next,
                    name: vertex.name.clone(),
                    started: false,
                    done: false,
                });
            let number = known.number;
            if vertex.started.is_some() && !known.started {
                known.started = true;
                lines.push(format!("#{number} {}", vertex.name));
            }
            if known.done {
                continue;
            }
            if let Some(source) = missing_cache_source(&vertex.name, &vertex.error) {
                // The first build for a registry: nothing to import yet,
                // which is expected, not an error.
                known.done = true;
                lines.push(format!("#{number} no cache yet at {source}: first build"));
            } else if !vertex.error.is_empty() {
                known.done = true;
                lines.push(format!("#{number} ERROR: {}", vertex.error));
                // Only a Dockerfile step can fail the build: a cache source
                // that cannot be read is an error line, then the build goes on.
                if self.failed_step.is_none() && is_dockerfile_step(&vertex.name) {
                    self.failed_step = Some(vertex.name.clone());
                }
            } else if vertex.cached || vertex.completed.is_some() {
                known.done = true;
                if is_dockerfile_step(&vertex.name) {
                    self.steps += 1;
                    self.cached += usize::from(vertex.cached);
                }
                let state = if vertex.cached {
                    "CACHED".to_string()
                } else {
                    match (&vertex.started, &vertex.completed) {
                        (Some(start), Some(end)) => {
                            let seconds = (end.seconds - start.seconds) as f64
                                + f64::from(end.nanos - start.nanos) / 1e9;
                            format!("DONE {seconds:.1}s")
                        }
                        _ => "DONE".to_string(),
                    }
                };
                lines.push(format!("#{number} {state}"));
            }
        }
        for log in &status.logs {
            let number = self.vertices.get(&log.vertex).map_or(0, |v| v.number);
            for line in String::from_utf8_lossy(&log.msg).lines() {
                lines.push(format!("#{number} {}", line.trim_end()));
            }
        }
        self.remember(&lines);
        lines
    }

    /// The lines for the end of a BuildKit build: a step this build never
    /// saw finish was run by a concurrent build of identical content (the
    /// engine solves the same step once) and counts as taken from the cache.
    pub fn finish(&mut self) -> Vec<String> {
        let mut open: Vec<&mut Vertex> = self
            .vertices
            .values_mut()
            .filter(|v| !v.done && is_dockerfile_step(&v.name))
            .collect();
        open.sort_by_key(|v| v.number);
        let mut lines = Vec::new();
        for vertex in open {
            vertex.done = true;
            self.steps += 1;
            self.cached += 1;
            lines.push(format!(
                "#{} {} (shared with a concurrent build)",
                vertex.number, vertex.name
            ));
        }
        self.remember(&lines);
        lines
    }

    /// The lines for one chunk of classic builder output.
    pub fn classic(&mut self, text: &str) -> Vec<String> {
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        for line in &lines {
            if let Some(step) = line.strip_prefix("Step ") {
                self.steps += 1;
                self.step = Some(
                    step.split_once(" : ")
                        .map_or(step, |(_, instruction)| instruction)
                        .to_string(),
                );
            } else if line.trim() == "---> Using cache" {
                self.cached += 1;
            }
        }
        self.remember(&lines);
        lines
    }

    /// The Dockerfile step that failed, when the engine said which.
    pub fn failed_step(&self) -> Option<&str> {
        self.failed_step.as_deref().or(self.step.as_deref())
    }

    /// The last lines of output, oldest first.
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }

    fn remember(&mut self, lines: &[String]) {
        for line in lines {
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line.clone());
        }
    }
}

/// The cache source of BuildKit's cache-import vertex (`importing cache
/// manifest from <ref>`) when it failed because the source does not exist
/// (`<ref>: not found`). Any other failure (a refused login, an unreachable
/// registry) stays an error line.
fn missing_cache_source<'a>(name: &'a str, error: &str) -> Option<&'a str> {
    let source = name.strip_prefix("importing cache manifest from ")?;
    error.trim_end().ends_with("not found").then_some(source)
}

/// BuildKit names Dockerfile steps `[stage n/m] INSTRUCTION …`; its own
/// vertices are `[internal] …` or unbracketed.
fn is_dockerfile_step(name: &str) -> bool {
    name.starts_with('[') && !name.starts_with("[internal]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::moby::buildkit::v1::{Vertex as V, VertexLog};

    fn vertex(digest: &str, name: &str) -> V {
        V {
            digest: digest.into(),
            name: name.into(),
            ..V::default()
        }
    }

    /// `vertex` started at `start` and, when given, completed at `end`
    /// (seconds); the timestamp type is not re-exported by bollard.
    fn timed(mut v: V, start: i64, end: Option<i64>) -> V {
        let mut started = v.started.take().unwrap_or_default();
        started.seconds = start;
        v.started = Some(started);
        if let Some(end) = end {
            started.seconds = end;
            v.completed = Some(started);
        }
        v
    }

    #[test]
    fn buildkit_vertices_become_numbered_plain_lines() {
        let mut log = BuildLog::default();
        let started = StatusResponse {
            vertexes: vec![
                timed(
                    vertex("a", "[internal] load build definition from Dockerfile"),
                    10,
                    None,
                ),
                timed(
                    vertex("b", "[base 1/2] COPY busybox /bin/busybox"),
                    10,
                    None,
                ),
            ],
            ..StatusResponse::default()
        };
        assert_eq!(
            log.buildkit(&started),
            [
                "#1 [internal] load build definition from Dockerfile",
                "#2 [base 1/2] COPY busybox /bin/busybox"
            ]
        );
        let progress = StatusResponse {
            vertexes: vec![
                timed(
                    vertex("a", "[internal] load build definition from Dockerfile"),
                    10,
                    Some(12),
                ),
                V {
                    cached: true,
                    ..vertex("b", "[base 1/2] COPY busybox /bin/busybox")
                },
                timed(vertex("c", "[base 2/2] RUN false"), 12, None),
            ],
            logs: vec![VertexLog {
                vertex: "c".into(),
                msg: b"doing it\nstill\n".to_vec(),
                ..VertexLog::default()
            }],
            ..StatusResponse::default()
        };
        assert_eq!(
            log.buildkit(&progress),
            [
                "#1 DONE 2.0s",
                "#2 CACHED",
                "#3 [base 2/2] RUN false",
                "#3 doing it",
                "#3 still"
            ]
        );
        let cache = StatusResponse {
            vertexes: vec![V {
                error: "401 Unauthorized".into(),
                ..timed(
                    vertex("d", "importing cache manifest from r/app"),
                    11,
                    Some(11),
                )
            }],
            ..StatusResponse::default()
        };
        assert_eq!(
            log.buildkit(&cache),
            [
                "#4 importing cache manifest from r/app",
                "#4 ERROR: 401 Unauthorized"
            ]
        );
        assert_eq!(log.failed_step(), None, "a cache source is not a step");
        let first = StatusResponse {
            vertexes: vec![V {
                error: "r/app:staging-latest: not found".into(),
                ..timed(
                    vertex("e", "importing cache manifest from r/app:staging-latest"),
                    11,
                    Some(11),
                )
            }],
            ..StatusResponse::default()
        };
        assert_eq!(
            log.buildkit(&first),
            [
                "#5 importing cache manifest from r/app:staging-latest",
                "#5 no cache yet at r/app:staging-latest: first build"
            ]
        );
        let failed = StatusResponse {
            vertexes: vec![V {
                error: "exit code: 1".into(),
                ..timed(vertex("c", "[base 2/2] RUN false"), 12, Some(13))
            }],
            ..StatusResponse::default()
        };
        assert_eq!(log.buildkit(&failed), ["#3 ERROR: exit code: 1"]);
        assert_eq!(log.failed_step(), Some("[base 2/2] RUN false"));
        assert!(log.finish().is_empty(), "every step finished");
        assert_eq!(log.failed_step(), Some("[base 2/2] RUN false"));
        assert_eq!((log.steps, log.cached), (1, 1));
        assert_eq!(log.tail().last(), Some("#3 ERROR: exit code: 1"));
    }

    #[test]
    fn a_step_run_by_a_concurrent_build_counts_as_cached() {
        let mut log = BuildLog::default();
        let seen = StatusResponse {
            vertexes: vec![
                vertex("a", "[1/1] COPY src/ /srv/"),
                vertex("b", "exporting to image"),
            ],
            ..StatusResponse::default()
        };
        assert!(log.buildkit(&seen).is_empty(), "nothing started yet");
        assert_eq!(
            log.finish(),
            ["#1 [1/1] COPY src/ /srv/ (shared with a concurrent build)"]
        );
        assert_eq!((log.steps, log.cached), (1, 1));
    }

    #[test]
    fn classic_output_names_the_step_that_runs() {
        let mut log = BuildLog::default();
        log.classic("Step 1/3 : FROM scratch\n ---> \n");
        log.classic("Step 2/3 : COPY busybox /bin/busybox\n ---> Using cache\n ---> 1a2b\n");
        log.classic("Step 3/3 : RUN [\"/bin/busybox\", \"false\"]\n ---> Running in 9f\n");
        assert_eq!(log.failed_step(), Some("RUN [\"/bin/busybox\", \"false\"]"));
        assert_eq!((log.steps, log.cached), (3, 1));
    }

    #[test]
    fn the_tail_keeps_the_last_lines_only() {
        let mut log = BuildLog::default();
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        log.classic(&text);
        let tail: Vec<&str> = log.tail().collect();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[0], "line 30");
        assert_eq!(tail[TAIL_LINES - 1], "line 49");
    }
}

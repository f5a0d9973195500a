//! What a build tells the person or tool watching it: events from the
//! builder, rendered as BuildKit-like plain lines (`#N [stage i/n] …`,
//! `#N CACHED`, `#N 0.42 output`, `#N DONE 1.2s`), one JSON object per
//! event, or nothing. Output lines are never clipped.
//!
//! The builder only emits [`Event`]s; choosing and drawing a renderer is
//! the CLI's business.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::executor::Stream;

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Something worth knowing (the isolation tier, a push).
    Note(String),
    /// A warning about the Dockerfile or the build arguments.
    Warning(String),
    /// A step started (ids count from 1 in start order).
    Started {
        /// The step's number.
        id: usize,
        /// Its stage's name (or `stage-N`).
        stage: String,
        /// Its place in the stage, from 1.
        index: usize,
        /// The stage's step count.
        total: usize,
        /// The instruction as written.
        text: String,
    },
    /// The step's result came from the cache.
    Cached {
        /// The step.
        id: usize,
    },
    /// A line the step printed.
    Output {
        /// The step.
        id: usize,
        /// stdout or stderr.
        stream: Stream,
        /// Time since the step started.
        elapsed: Duration,
        /// The line, without its newline.
        line: String,
    },
    /// The step ran and succeeded.
    Done {
        /// The step.
        id: usize,
        /// How long it took.
        elapsed: Duration,
    },
    /// Bytes moved so far by a transfer or a hashing pass.
    Bytes {
        /// What moves them ("push app:1", "hashing the context").
        task: String,
        /// Bytes so far.
        done: u64,
        /// Bytes in all, when known.
        total: Option<u64>,
    },
    /// That transfer is over.
    BytesDone {
        /// The task.
        task: String,
        /// Bytes in all.
        done: u64,
        /// How long it took.
        elapsed: Duration,
    },
    /// The step failed.
    Failed {
        /// The step.
        id: usize,
        /// How long it ran.
        elapsed: Duration,
        /// Why.
        message: String,
    },
}

/// The end-of-build summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Steps that ran.
    pub ran: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// Wall time of the whole command.
    pub elapsed: Duration,
    /// Time per phase (name, seconds), in order.
    pub phases: Vec<(String, Duration)>,
    /// The image id (config digest).
    pub image: String,
    /// The manifest digest.
    pub manifest: String,
    /// Compressed size of the image's layers, config and manifest.
    pub size: u64,
}

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// tty when stderr is a terminal (and `CI` is unset), plain otherwise.
    #[default]
    Auto,
    /// Live lines per running step (a terminal).
    Tty,
    /// BuildKit-like plain lines.
    Plain,
    /// One JSON object per event.
    Json,
    /// Nothing but errors.
    Quiet,
}

impl Mode {
    /// `auto` made concrete for this process.
    pub fn resolve(self) -> Mode {
        use std::io::IsTerminal;
        match self {
            Mode::Auto if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() => {
                Mode::Tty
            }
            Mode::Auto => Mode::Plain,
            other => other,
        }
    }
}

/// Something that shows events.
pub trait Renderer {
    /// Shows one event.
    fn event(&mut self, event: &Event);
    /// Shows the summary (after the last event).
    fn summary(&mut self, summary: &Summary);
}

/// BuildKit-style plain lines.
pub struct Plain<W: Write> {
    out: W,
}

impl<W: Write> Plain<W> {
    /// Plain lines into `out`.
    pub fn new(out: W) -> Plain<W> {
        Plain { out }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl<W: Write> Renderer for Plain<W> {
    fn event(&mut self, event: &Event) {
        let _ = match event {
            Event::Note(text) | Event::Warning(text) => writeln!(self.out, "{text}"),
            Event::Started {
                id,
                stage,
                index,
                total,
                text,
            } => writeln!(self.out, "#{id} [{stage} {index}/{total}] {text}"),
            Event::Cached { id } => writeln!(self.out, "#{id} CACHED"),
            Event::Output {
                id, elapsed, line, ..
            } => writeln!(self.out, "#{id} {:.3} {line}", elapsed.as_secs_f64()),
            Event::Done { id, elapsed } => writeln!(self.out, "#{id} DONE {}", seconds(*elapsed)),
            Event::Failed {
                id,
                elapsed,
                message,
            } => writeln!(self.out, "#{id} ERROR {}: {message}", seconds(*elapsed)),
            // Plain output shows transfers once, when they end.
            Event::Bytes { .. } => Ok(()),
            Event::BytesDone {
                task,
                done,
                elapsed,
            } => writeln!(
                self.out,
                "{task}: {} in {}",
                crate::units::human_bytes(*done),
                seconds(*elapsed)
            ),
        };
    }

    fn summary(&mut self, s: &Summary) {
        let phases: Vec<String> = s
            .phases
            .iter()
            .map(|(name, d)| format!("{name} {}", seconds(*d)))
            .collect();
        let _ = writeln!(self.out, "{} step(s) run, {} cached", s.ran, s.cached);
        let _ = writeln!(
            self.out,
            "done in {} ({})",
            seconds(s.elapsed),
            phases.join(", ")
        );
        let _ = writeln!(
            self.out,
            "image {} (manifest {}, {})",
            s.image,
            s.manifest,
            crate::units::human_bytes(s.size)
        );
    }
}

/// One JSON object per line.
pub struct Json<W: Write> {
    out: W,
}

impl<W: Write> Json<W> {
    /// JSON lines into `out`.
    pub fn new(out: W) -> Json<W> {
        Json { out }
    }
}

/// The JSON object for an event.
pub fn event_json(event: &Event) -> serde_json::Value {
    use serde_json::json;
    match event {
        Event::Note(text) => json!({"type": "note", "message": text}),
        Event::Warning(text) => json!({"type": "warning", "message": text}),
        Event::Started {
            id,
            stage,
            index,
            total,
            text,
        } => {
            json!({"type": "start", "id": id, "stage": stage, "index": index, "total": total, "instruction": text})
        }
        Event::Cached { id } => json!({"type": "cached", "id": id}),
        Event::Output {
            id,
            stream,
            elapsed,
            line,
        } => json!({
            "type": "log",
            "id": id,
            "stream": if *stream == Stream::Stderr { "stderr" } else { "stdout" },
            "seconds": elapsed.as_secs_f64(),
            "line": line,
        }),
        Event::Done { id, elapsed } => {
            json!({"type": "done", "id": id, "seconds": elapsed.as_secs_f64()})
        }
        Event::Failed {
            id,
            elapsed,
            message,
        } => {
            json!({"type": "error", "id": id, "seconds": elapsed.as_secs_f64(), "message": message})
        }
        Event::Bytes { task, done, total } => {
            json!({"type": "progress", "task": task, "bytes": done, "total": total})
        }
        Event::BytesDone {
            task,
            done,
            elapsed,
        } => {
            json!({"type": "progress-done", "task": task, "bytes": done, "seconds": elapsed.as_secs_f64()})
        }
    }
}

impl<W: Write> Renderer for Json<W> {
    fn event(&mut self, event: &Event) {
        let _ = writeln!(self.out, "{}", event_json(event));
    }

    fn summary(&mut self, s: &Summary) {
        let phases: serde_json::Map<String, serde_json::Value> = s
            .phases
            .iter()
            .map(|(name, d)| (name.clone(), d.as_secs_f64().into()))
            .collect();
        let _ = writeln!(
            self.out,
            "{}",
            serde_json::json!({
                "type": "summary",
                "ran": s.ran,
                "cached": s.cached,
                "seconds": s.elapsed.as_secs_f64(),
                "phases": phases,
                "image": s.image,
                "manifest": s.manifest,
                "size": s.size,
            })
        );
    }
}

/// Shows nothing (errors still reach stderr through the CLI).
pub struct Quiet;

impl Renderer for Quiet {
    fn event(&mut self, _: &Event) {}
    fn summary(&mut self, _: &Summary) {}
}

/// Runs `work` on a scoped thread while this one reports, every 100 ms,
/// how far `counter` (bytes) has got; then reports the end.
pub fn track<T: Send>(
    task: &str,
    total: Option<u64>,
    counter: &std::sync::atomic::AtomicU64,
    log: &mut dyn FnMut(&Event),
    work: impl FnOnce() -> T + Send,
) -> T {
    use std::sync::atomic::Ordering;
    let started = Instant::now();
    let start = counter.load(Ordering::Relaxed);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let mut reported = false;
    let result = std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            let result = work();
            let _ = done_tx.send(());
            result
        });
        // Quick work reports nothing; longer work, every 100 ms.
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_millis(100))
        {
            reported = true;
            log(&Event::Bytes {
                task: task.to_string(),
                done: counter.load(Ordering::Relaxed) - start,
                total,
            });
        }
        handle.join()
    });
    let result = match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let done = counter.load(Ordering::Relaxed) - start;
    if reported || done > 0 {
        log(&Event::BytesDone {
            task: task.to_string(),
            done,
            elapsed: started.elapsed(),
        });
    }
    result
}

/// The renderer for `mode` (already resolved), writing to stderr.
pub fn renderer(mode: Mode) -> Box<dyn Renderer> {
    match mode {
        Mode::Json => Box::new(Json::new(std::io::stderr())),
        Mode::Quiet => Box::new(Quiet),
        Mode::Tty => Box::new(Tty::new()),
        Mode::Plain | Mode::Auto => Box::new(Plain::new(std::io::stderr())),
    }
}

/// Times the phases of a command, for the summary.
#[derive(Debug)]
pub struct Phases {
    started: Instant,
    last: Instant,
    phases: Vec<(String, Duration)>,
}

impl Default for Phases {
    fn default() -> Self {
        let now = Instant::now();
        Phases {
            started: now,
            last: now,
            phases: Vec::new(),
        }
    }
}

impl Phases {
    /// Ends the phase running since the last mark, naming it.
    pub fn mark(&mut self, name: &str) {
        let now = Instant::now();
        self.phases.push((name.to_string(), now - self.last));
        self.last = now;
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The phases so far.
    pub fn list(&self) -> Vec<(String, Duration)> {
        self.phases.clone()
    }
}

/// Leaves a step's line as `status  #N [stage i/n] instruction`.
fn finish(bar: &indicatif::ProgressBar, status: String) {
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>11} {prefix}").expect("a valid template"),
    );
    bar.finish_with_message(status);
}

/// A terminal display: one live line per running step (spinner, elapsed
/// time, its newest output line); finished steps stay as `DONE`/`CACHED`
/// lines; a failed step's whole output is printed.
pub struct Tty {
    multi: indicatif::MultiProgress,
    steps: std::collections::HashMap<usize, (indicatif::ProgressBar, Vec<String>)>,
    transfers: std::collections::HashMap<String, indicatif::ProgressBar>,
}

impl Tty {
    /// A display on stderr.
    pub fn new() -> Tty {
        Tty {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
            steps: Default::default(),
            transfers: Default::default(),
        }
    }
}

impl Default for Tty {
    fn default() -> Self {
        Tty::new()
    }
}

impl Renderer for Tty {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Note(text) | Event::Warning(text) => {
                let _ = self.multi.println(text);
            }
            Event::Started {
                id,
                stage,
                index,
                total,
                text,
            } => {
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                // Two lines: the step with its time, then its newest output.
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {elapsed:>4} {prefix}\n       {wide_msg:.dim}",
                    )
                    .expect("a valid template"),
                );
                bar.set_prefix(format!("#{id} [{stage} {index}/{total}] {text}"));
                bar.enable_steady_tick(Duration::from_millis(100));
                self.steps.insert(*id, (bar, Vec::new()));
            }
            Event::Output { id, line, .. } => {
                if let Some((bar, log)) = self.steps.get_mut(id) {
                    log.push(line.clone());
                    // The newest lines, under the step.
                    let tail = log[log.len().saturating_sub(3)..].join("\n       ");
                    bar.set_message(tail);
                }
            }
            Event::Bytes { task, done, total } => {
                let multi = &self.multi;
                let bar = self.transfers.entry(task.clone()).or_insert_with(|| {
                    let bar = multi.add(indicatif::ProgressBar::new(total.unwrap_or(0)));
                    let template = if total.is_some() {
                        "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
                    } else {
                        "{spinner} {prefix} {bytes} {bytes_per_sec}"
                    };
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(template)
                            .expect("a valid template")
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(task.clone());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                if let Some(total) = total {
                    bar.set_length(*total);
                }
                bar.set_position(*done);
            }
            Event::BytesDone {
                task,
                done,
                elapsed,
            } => {
                let summary = format!("{} {}", crate::units::human_bytes(*done), seconds(*elapsed));
                match self.transfers.get(task) {
                    Some(bar) => {
                        bar.set_position(*done);
                        finish(bar, summary);
                    }
                    // Over before its first report: one line for it.
                    None => {
                        let _ = self.multi.println(format!("{task}: {summary}"));
                    }
                }
            }
            Event::Cached { id } => {
                if let Some((bar, _)) = self.steps.get(id) {
                    finish(bar, "CACHED".to_string());
                }
            }
            Event::Done { id, elapsed } => {
                if let Some((bar, _)) = self.steps.get(id) {
                    finish(bar, format!("DONE {}", seconds(*elapsed)));
                }
            }
            Event::Failed {
                id,
                elapsed,
                message,
            } => {
                if let Some((bar, log)) = self.steps.get(id) {
                    finish(bar, format!("ERROR {}", seconds(*elapsed)));
                    let mut text = format!("#{id} output:\n");
                    for line in log {
                        text.push_str(&format!("#{id} {line}\n"));
                    }
                    text.push_str(&format!("#{id} ERROR: {message}"));
                    let _ = self.multi.println(text);
                }
            }
        }
    }

    fn summary(&mut self, s: &Summary) {
        let mut plain = Plain::new(Vec::new());
        plain.summary(s);
        let text = String::from_utf8_lossy(&plain.out).trim_end().to_string();
        let _ = self.multi.println(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_look_like_buildkit() {
        let mut out = Vec::new();
        let mut plain = Plain::new(&mut out);
        plain.event(&Event::Started {
            id: 1,
            stage: "build".into(),
            index: 2,
            total: 3,
            text: "RUN make".into(),
        });
        plain.event(&Event::Output {
            id: 1,
            stream: Stream::Stdout,
            elapsed: Duration::from_millis(420),
            line: "cc -o app".into(),
        });
        plain.event(&Event::Done {
            id: 1,
            elapsed: Duration::from_millis(1234),
        });
        plain.event(&Event::Cached { id: 2 });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "#1 [build 2/3] RUN make\n#1 0.420 cc -o app\n#1 DONE 1.2s\n#2 CACHED\n"
        );
    }

    #[test]
    fn json_events_carry_everything() {
        let v = event_json(&Event::Output {
            id: 3,
            stream: Stream::Stderr,
            elapsed: Duration::from_millis(5),
            line: "warning: x".into(),
        });
        assert_eq!(v["type"], "log");
        assert_eq!(v["id"], 3);
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["line"], "warning: x");
    }
}

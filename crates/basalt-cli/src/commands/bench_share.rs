//! `basalt bench sharing`: two Basalt processes on one machine — a server answering questions
//! and a command-line ingestion beside it — each measured alone and then together, so the cost
//! of sharing the cores is a ratio measured in one run. Fair sharing of the CPU costs each about
//! 2×; threads that spin while they wait for a descheduled partner cost far more.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::bench::{Floor, ReportArgs, SharedDataArgs, percentile, print_floors, read_scifact};
use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct SharingBenchArgs {
    #[command(flatten)]
    data: SharedDataArgs,
    /// SciFact abstracts the server's knowledge base holds
    #[arg(long, default_value_t = 300, value_name = "N")]
    served: usize,
    /// SciFact abstracts the command-line ingestion embeds (after the served ones)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    ingested: usize,
    /// Questions asked alone (SciFact training claims); together, they are asked in a loop
    /// for as long as the ingestion runs
    #[arg(long, default_value_t = 12, value_name = "N")]
    questions: usize,
    /// Most tokens per answer
    #[arg(long, default_value_t = 48, value_name = "N")]
    max_tokens: usize,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Debug, Serialize)]
struct SharingReport {
    threads: usize,
    cpu: String,
    /// `GOMP_SPINCOUNT` both processes ran with.
    openmp_spin_count: Option<String>,
    served_documents: usize,
    ingested_documents: usize,
    alone: Phase,
    together: Phase,
    /// Together over alone: answer latency median and p90, ingestion time.
    answer_latency_p50_ratio: f64,
    answer_latency_p90_ratio: f64,
    ingestion_time_ratio: f64,
    floors: Vec<Floor>,
}

#[derive(Debug, Serialize)]
struct Phase {
    answers: usize,
    answer_latency_p50_ms: f64,
    answer_latency_p90_ms: f64,
    ingestion_seconds: f64,
}

/// The most each side may slow down beside the other.
const FLOOR: f64 = 2.5;

pub(crate) fn run(args: &SharingBenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let work = tempfile::tempdir().context("while making a scratch directory")?;
    let corpus = read_scifact(&args.data.path, "corpus.jsonl", args.served + args.ingested)?;
    if corpus.len() < args.served + args.ingested {
        bail!(
            "the corpus has {} abstracts, fewer than --served + --ingested",
            corpus.len()
        );
    }
    let served_docs = work.path().join("served");
    let ingested_docs = work.path().join("ingested");
    write_documents(&served_docs, &corpus[..args.served])?;
    write_documents(&ingested_docs, &corpus[args.served..])?;
    let questions = args.data.query_texts(None, args.questions.max(1))?;
    let basalt = Basalt {
        executable: std::env::current_exe().context("while finding this executable")?,
        data_dir: work.path().join("data"),
        settings,
    };

    eprintln!(
        "basalt: building the served knowledge base ({} abstracts)",
        args.served
    );
    basalt.run(&["kb", "create", "served"])?;
    basalt.run(&[
        "ingest",
        "--kb",
        "served",
        &served_docs.display().to_string(),
    ])?;
    let server = basalt.serve()?;
    let ask = |question: &str| -> anyhow::Result<f64> {
        let body = serde_json::json!({
            "question": question,
            "max_tokens": args.max_tokens,
            // Every question reaches the model: this measures generation beside ingestion.
            "min_relevance": 0.0,
        });
        let started = Instant::now();
        let (status, text) = post_json(server.port, "/v1/kbs/served/answer", &body.to_string())?;
        if status != 200 {
            bail!("the server answered {status}: {text}");
        }
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    ask(&questions[0])?;

    eprintln!("basalt: {} answers alone", questions.len());
    let mut alone_latencies = Vec::new();
    for question in &questions {
        alone_latencies.push(ask(question)?);
    }
    eprintln!("basalt: ingesting {} abstracts alone", args.ingested);
    basalt.run(&["kb", "create", "alone"])?;
    let started = Instant::now();
    basalt.run(&[
        "ingest",
        "--kb",
        "alone",
        &ingested_docs.display().to_string(),
    ])?;
    let alone_ingestion = started.elapsed().as_secs_f64();

    eprintln!("basalt: both together");
    basalt.run(&["kb", "create", "together"])?;
    let started = Instant::now();
    let mut ingestion = basalt.spawn(&[
        "ingest",
        "--kb",
        "together",
        &ingested_docs.display().to_string(),
    ])?;
    let mut together_latencies = Vec::new();
    let together_ingestion = loop {
        if let Some(status) = ingestion.try_wait()? {
            if !status.success() {
                bail!("the ingestion beside the server failed ({status})");
            }
            break started.elapsed().as_secs_f64();
        }
        let question = &questions[together_latencies.len() % questions.len()];
        together_latencies.push(ask(question)?);
    };
    drop(server);

    let alone = Phase::of(alone_latencies, alone_ingestion);
    let together = Phase::of(together_latencies, together_ingestion);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let p50 = ratio(together.answer_latency_p50_ms, alone.answer_latency_p50_ms);
    let p90 = ratio(together.answer_latency_p90_ms, alone.answer_latency_p90_ms);
    let ingestion_ratio = ratio(together.ingestion_seconds, alone.ingestion_seconds);
    let at_most = |metric, ratio: f64| Floor {
        metric,
        ratio,
        floor: format!("<= {FLOOR}"),
        met: ratio <= FLOOR,
    };
    let report = SharingReport {
        threads: settings.threads,
        cpu: basalt_model::cpu::CpuInfo::detect().model_name,
        openmp_spin_count: std::env::var("GOMP_SPINCOUNT").ok(),
        served_documents: args.served,
        ingested_documents: args.ingested,
        floors: vec![
            at_most("answer latency p50, beside an ingestion", p50),
            at_most("ingestion time, beside a serving server", ingestion_ratio),
        ],
        alone,
        together,
        answer_latency_p50_ratio: p50,
        answer_latency_p90_ratio: p90,
        ingestion_time_ratio: ingestion_ratio,
    };
    let json = serde_json::to_string_pretty(&report)?;
    args.report.emit(&json, || print_table(&report))?;
    Ok(ExitCode::SUCCESS)
}

impl Phase {
    fn of(mut latencies: Vec<f64>, ingestion_seconds: f64) -> Self {
        latencies.sort_by(f64::total_cmp);
        Phase {
            answers: latencies.len(),
            answer_latency_p50_ms: percentile(&latencies, 0.5),
            answer_latency_p90_ms: percentile(&latencies, 0.9),
            ingestion_seconds,
        }
    }
}

fn print_table(report: &SharingReport) -> anyhow::Result<()> {
    print_line(&format!(
        "{} threads on {}; GOMP_SPINCOUNT {}",
        report.threads,
        report.cpu,
        report.openmp_spin_count.as_deref().unwrap_or("unset")
    ))?;
    print_line(&format!(
        "{:<28} {:>10} {:>10} {:>7}",
        "", "alone", "together", "ratio"
    ))?;
    let rows = [
        (
            "answer latency p50 (ms)",
            report.alone.answer_latency_p50_ms,
            report.together.answer_latency_p50_ms,
            report.answer_latency_p50_ratio,
        ),
        (
            "answer latency p90 (ms)",
            report.alone.answer_latency_p90_ms,
            report.together.answer_latency_p90_ms,
            report.answer_latency_p90_ratio,
        ),
        (
            "ingestion (s)",
            report.alone.ingestion_seconds,
            report.together.ingestion_seconds,
            report.ingestion_time_ratio,
        ),
    ];
    for (name, alone, together, ratio) in rows {
        print_line(&format!(
            "{name:<28} {alone:>10.1} {together:>10.1} {ratio:>7.2}"
        ))?;
    }
    print_floors(&report.floors)
}

/// This executable run as separate processes over one scratch data directory.
pub(crate) struct Basalt<'a> {
    pub(crate) executable: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) settings: &'a Settings,
}

impl Basalt<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.executable);
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--models-dir")
            .arg(self.settings.models_dir.root())
            .arg("--threads")
            .arg(self.settings.threads.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    pub(crate) fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = self
            .command(args)
            .status()
            .with_context(|| format!("while running basalt {}", args.join(" ")))?;
        if !status.success() {
            bail!("basalt {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    fn spawn(&self, args: &[&str]) -> anyhow::Result<Child> {
        self.command(args)
            .spawn()
            .with_context(|| format!("while starting basalt {}", args.join(" ")))
    }

    /// `basalt serve --local-demo` on a free loopback port, once it answers.
    pub(crate) fn serve(&self) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let child = self.spawn(&["serve", "--local-demo", "--addr", &address])?;
        let mut server = Server { child, port };
        let started = Instant::now();
        while get(port, "/healthz").map(|(status, _)| status).unwrap_or(0) != 200 {
            if let Some(status) = server.child.try_wait()? {
                bail!("basalt serve stopped ({status})");
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("basalt serve did not come up on {address}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }
}

/// A server child process, stopped when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

fn post_json(port: u16, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// One HTTP/1.1 request on a fresh connection; the status and the body as text.
fn exchange(port: u16, request: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("the server sent no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    Ok((status, body))
}

fn write_documents(dir: &Path, documents: &[(String, String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (index, (title, text)) in documents.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{index:05}.md")),
            format!("# {title}\n\n{text}\n"),
        )?;
    }
    Ok(())
}

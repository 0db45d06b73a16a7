//! `basalt bench remote`: what answering through a model served elsewhere adds to the time to
//! first token. Two `basalt serve` processes on this machine: the remote, serving the embedded
//! model over its OpenAI-compatible API, and the front, with the remote registered as a model
//! (`basalt models add`). The same streamed chat completions go to each in turn; the front's
//! extra time is its own hop (scheduling, the remote client, relaying the stream).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::bench::{Floor, ReportArgs, SharedDataArgs, percentile, print_floors};
use super::bench_share::Basalt;
use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct RemoteBenchArgs {
    #[command(flatten)]
    data: SharedDataArgs,
    /// Chat requests sent each way (SciFact training claims as prompts)
    #[arg(long, default_value_t = 30, value_name = "N")]
    requests: usize,
    /// Tokens each request asks for
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_tokens: usize,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Debug, Serialize)]
struct RemoteReport {
    threads: usize,
    cpu: String,
    requests: usize,
    max_tokens: usize,
    /// Straight to the remote server.
    direct: Timings,
    /// Through the front server, which has the remote registered as a model.
    through_basalt: Timings,
    /// Through minus direct, p50 of time to first token.
    added_first_token_p50_ms: f64,
    floors: Vec<Floor>,
}

#[derive(Debug, Serialize)]
struct Timings {
    first_token_p50_ms: f64,
    first_token_p90_ms: f64,
    total_p50_ms: f64,
}

/// The most the hop may add to the remote's own time to first token (p50).
const ADDED_MS: f64 = 50.0;

pub(crate) fn run(args: &RemoteBenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let work = tempfile::tempdir().context("while making a scratch directory")?;
    let executable = std::env::current_exe().context("while finding this executable")?;
    let remote = Basalt {
        executable: executable.clone(),
        data_dir: work.path().join("remote"),
        settings,
    };
    let front = Basalt {
        executable,
        data_dir: work.path().join("front"),
        settings,
    };
    let prompts = args.data.query_texts(None, args.requests.max(1))?;
    eprintln!("basalt: starting the remote server");
    let remote_server = remote.serve()?;
    let url = format!("http://127.0.0.1:{}/v1", remote_server.port);
    front.run(&[
        "models",
        "add",
        "remote",
        "--openai-url",
        &url,
        "--remote-model",
        basalt_model::DEFAULT_GENERATION_MODEL,
    ])?;
    eprintln!("basalt: starting the front server");
    let front_server = front.serve()?;
    let request = |port: u16, model: &str, prompt: &str| {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "stream": true,
        });
        first_token(port, &body.to_string())
    };
    // One of each first: the models load their weights and warm their caches.
    request(
        remote_server.port,
        basalt_model::DEFAULT_GENERATION_MODEL,
        &prompts[0],
    )?;
    request(front_server.port, "remote", &prompts[0])?;
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for (index, prompt) in prompts.iter().enumerate() {
        eprintln!("basalt: request {} of {}", index + 1, prompts.len());
        // Alternating, so drift on a shared machine favours neither side.
        let remote_first = index % 2 == 0;
        for side in [remote_first, !remote_first] {
            if side {
                direct.push(request(
                    remote_server.port,
                    basalt_model::DEFAULT_GENERATION_MODEL,
                    prompt,
                )?);
            } else {
                through.push(request(front_server.port, "remote", prompt)?);
            }
        }
    }
    drop(front_server);
    drop(remote_server);
    let direct = Timings::of(&direct);
    let through = Timings::of(&through);
    let added = through.first_token_p50_ms - direct.first_token_p50_ms;
    let report = RemoteReport {
        threads: settings.threads,
        cpu: basalt_model::cpu::CpuInfo::detect().model_name,
        requests: prompts.len(),
        max_tokens: args.max_tokens,
        floors: vec![Floor {
            metric: "time to first token through a remote model, p50, over the remote's own (ms added)",
            ratio: added,
            floor: format!("<= {ADDED_MS} ms"),
            met: added <= ADDED_MS,
        }],
        direct,
        through_basalt: through,
        added_first_token_p50_ms: added,
    };
    let json = serde_json::to_string_pretty(&report)?;
    args.report.emit(&json, || print_table(&report))?;
    Ok(ExitCode::SUCCESS)
}

impl Timings {
    fn of(measured: &[(f64, f64)]) -> Self {
        let mut first: Vec<f64> = measured.iter().map(|(first, _)| *first).collect();
        let mut total: Vec<f64> = measured.iter().map(|(_, total)| *total).collect();
        first.sort_by(f64::total_cmp);
        total.sort_by(f64::total_cmp);
        Timings {
            first_token_p50_ms: percentile(&first, 0.5),
            first_token_p90_ms: percentile(&first, 0.9),
            total_p50_ms: percentile(&total, 0.5),
        }
    }
}

/// A streamed chat completion: milliseconds to the first chunk with text, and to the end.
fn first_token(port: u16, body: &str) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    stream.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )?;
    let mut received = Vec::new();
    let mut first = None;
    let mut buffer = [0_u8; 4096];
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
        // The first chunk only names the role; the first with text says `"delta":{"content":"…`.
        if first.is_none() && has_text(&received) {
            first = Some(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let total = started.elapsed().as_secs_f64() * 1e3;
    let text = String::from_utf8_lossy(&received);
    if !text.starts_with("HTTP/1.1 200") {
        bail!(
            "the server answered: {}",
            text.lines().next().unwrap_or_default()
        );
    }
    let first = first.context("the stream held no text")?;
    Ok((first, total))
}

fn has_text(received: &[u8]) -> bool {
    const MARK: &[u8] = b"\"delta\":{\"content\":\"";
    received
        .windows(MARK.len() + 1)
        .any(|window| window.starts_with(MARK) && window[MARK.len()] != b'"')
}

fn print_table(report: &RemoteReport) -> anyhow::Result<()> {
    print_line(&format!(
        "{} threads on {}; {} streamed chat completions of {} tokens each way",
        report.threads, report.cpu, report.requests, report.max_tokens
    ))?;
    print_line(&format!(
        "{:<24} {:>12} {:>12} {:>12}",
        "", "first p50", "first p90", "total p50"
    ))?;
    for (name, timings) in [
        ("direct to the remote", &report.direct),
        ("through basalt", &report.through_basalt),
    ] {
        print_line(&format!(
            "{name:<24} {:>10.1}ms {:>10.1}ms {:>10.1}ms",
            timings.first_token_p50_ms, timings.first_token_p90_ms, timings.total_p50_ms
        ))?;
    }
    print_floors(&report.floors)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_text_is_found_past_the_role_chunk() {
        let role = br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        assert!(!super::has_text(role));
        let text = br#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#;
        assert!(super::has_text(text));
        assert!(!super::has_text(
            br#"data: {"choices":[{"delta":{"content":""}}]}"#
        ));
    }
}

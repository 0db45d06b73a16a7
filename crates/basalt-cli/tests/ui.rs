//! The web UI in a real browser: `basalt serve` with the real models on 127.0.0.1, driven by
//! Playwright (`playwright-core` from npm, installed in `e2e/` by scripts/test.sh) in Debian's
//! headless Chromium. The script (`e2e/ui.mjs`) signs in, creates a knowledge base, uploads a
//! PDF and a broken file, searches, asks, follows a citation to its highlighted passage,
//! resumes the conversation at phone width, checks what a read-only key is offered, and
//! deletes the document. Screenshots of every step are kept in `target/ui-screenshots/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use basalt_ingest::samples::pdf;
use common::{Workspace, cpu_turn, start_server_when};

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

#[test]
fn the_web_ui_signs_in_uploads_answers_with_citations_and_deletes_in_chromium() {
    let e2e = e2e_dir();
    assert!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix e2e` (scripts/test.sh does)"
    );
    let ws = Workspace::new();
    let docs = ws.docs();
    std::fs::create_dir_all(&docs).expect("docs");
    let document = docs.join("travel-policy.pdf");
    std::fs::write(
        &document,
        pdf(&[
            &[
                "Travel policy of the Northwind company.",
                "Trips are booked through the travel desk at least two weeks ahead.",
                "Train travel is preferred for journeys under four hours.",
            ],
            &[
                "Meals on business trips are reimbursed up to 45 euros per day.",
                "Receipts are submitted within thirty days of the trip.",
            ],
        ]),
    )
    .expect("pdf");
    let broken = docs.join("broken-scan.pdf");
    std::fs::write(&broken, b"%PDF-1.7\nthis file was cut off in transfer").expect("broken");
    // A knowledge base the reader key may search and ask, and nothing else.
    let shared = docs.join("shared");
    std::fs::create_dir_all(&shared).expect("shared");
    std::fs::write(
        shared.join("canteen.md"),
        "# Canteen\n\nThe canteen serves lunch from noon until two o'clock.\n",
    )
    .expect("shared doc");
    ws.ok(&["kb", "create", "shared"]);
    ws.ok(&["ingest", "--kb", "shared", &shared.display().to_string()]);
    let policy = ws.dir.path().join("reader.json");
    std::fs::write(
        &policy,
        r#"{"Statement": [
            {"Effect": "Allow", "Action": "kb:List", "Resource": "basalt:*:kb/*"},
            {"Effect": "Allow", "Action": ["kb:Get", "kb:Search", "kb:Answer", "kb:ListDocuments"],
             "Resource": "basalt:*:kb/shared"},
            {"Effect": "Allow", "Action": "session:*", "Resource": "*"}]}"#,
    )
    .expect("policy");
    ws.ok(&[
        "policy",
        "put",
        "shared-reader",
        &policy.display().to_string(),
    ]);
    let key = |args: &[&str]| -> String {
        let mut all = vec!["keys", "create", "--json"];
        all.extend_from_slice(args);
        ws.json(&all)["key"].as_str().expect("key").to_owned()
    };
    let admin = key(&["--principal", "admin", "--policy", "AdministratorAccess"]);
    let reader = key(&["--principal", "reader", "--policy", "shared-reader"]);

    let _turn = cpu_turn();
    let server = start_server_when(&ws, &[], |port| {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    let output = Command::new("node")
        .arg("ui.mjs")
        .current_dir(&e2e)
        .env("BASALT_URL", format!("http://127.0.0.1:{}", server.port))
        .env("BASALT_ADMIN_KEY", &admin)
        .env("BASALT_READER_KEY", &reader)
        .env("BASALT_DOCUMENT", &document)
        .env("BASALT_BROKEN", &broken)
        .env(
            "BASALT_QUESTION",
            "Up to how many euros per day are meals on business trips reimbursed?",
        )
        .env("BASALT_EXPECT", "45")
        .env("BASALT_SEARCH", "meals reimbursed euros")
        .env(
            "BASALT_OFF_TOPIC",
            "Which team won the football world cup final in 1954?",
        )
        .env("BASALT_SCREENSHOTS", &screenshots)
        .output()
        .unwrap_or_else(|error| {
            panic!("node runs (apt install nodejs; scripts/test.sh does): {error}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the UI script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("steps passed"), "{stdout}");

    // Every step left a screenshot, and none is blank.
    let mut shots: Vec<PathBuf> = std::fs::read_dir(&screenshots)
        .expect("screenshots")
        .map(|entry| entry.expect("entry").path())
        .collect();
    shots.sort();
    assert!(shots.len() >= 15, "{shots:?}");
    for shot in &shots {
        let drawn = common::ink(shot);
        assert!(
            drawn.ink > 0.01 && drawn.colors > 3,
            "{} looks blank",
            shot.display()
        );
    }
}

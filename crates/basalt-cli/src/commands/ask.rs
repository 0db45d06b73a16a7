//! `basalt ask` and `basalt chat`: grounded answers with numbered sources, streamed.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use basalt_answer::{
    Answer, AnswerOptions, Ask, Engines, GuardedTurn, SessionPolicy, SessionStore, Sessions,
    TurnEvent,
};
use basalt_guard::Guardrail;
use basalt_index::SearchMode;
use basalt_kb::KnowledgeBase;
use basalt_model::{Embedder, Generator};

use super::print_line;
use crate::settings::Settings;

/// Options shared by `ask` and `chat`.
#[derive(Debug, clap::Args)]
pub(crate) struct AnswerArgs {
    /// Knowledge base to answer from
    #[arg(long)]
    kb: String,
    /// Passages given to the model [default: the KB's, else 5]
    #[arg(long, value_name = "N")]
    passages: Option<usize>,
    /// Retrieval mode: hybrid, bm25 or vector [default: the KB's]
    #[arg(long)]
    mode: Option<SearchMode>,
    /// Only passages whose document matches this filter (see `basalt search --help`)
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Least cosine similarity of the best passage; below it the answer is "not found"
    /// [default: the KB's, else 0.59]
    #[arg(long, value_name = "COSINE")]
    min_relevance: Option<f32>,
    /// extractive (quote the sentence that answers) or generative (the model writes)
    /// [default: the KB's answer.style, else extractive]
    #[arg(long, value_name = "STYLE")]
    style: Option<basalt_kb::AnswerStyle>,
    /// Budget for passage text in the prompt, in embedding-model tokens: the sentences most
    /// similar to the question [default: 128]
    #[arg(long, value_name = "N")]
    context_tokens: Option<usize>,
    /// Most tokens in the answer
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy and deterministic
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    temperature: f32,
    /// Answer as this principal would be answered over the API: its tenant, only documents it
    /// may read
    #[arg(long = "as", value_name = "PRINCIPAL")]
    as_principal: Option<String>,
    /// Guardrail for the question and the answer, NAME or NAME:VERSION [default: the
    /// knowledge base's answer.guardrail, if any]
    #[arg(long, value_name = "NAME[:VERSION]")]
    guardrail: Option<String>,
    /// Chat model: a name registered with `basalt models add` (a model served elsewhere), a
    /// GGUF file to load, or smollm2-135m-instruct (the embedded one) [default: the knowledge
    /// base's answer.model, else the installed SmolLM2-135M-Instruct]
    #[arg(long, value_name = "NAME|PATH")]
    model: Option<String>,
    /// Context window in tokens [default: the model's, at most 8192]
    #[arg(long, value_name = "N")]
    context_size: Option<usize>,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  basalt ask --kb handbook \"How many vacation days do I get?\"\n  \
    basalt ask --kb papers --filter 'year >= 2020' --json \"What lowers blood pressure?\""
)]
pub(crate) struct AskArgs {
    /// The question
    question: String,
    #[command(flatten)]
    answer: AnswerArgs,
    /// Print one JSON object: {"answer", "abstained", "citations", "sources", "usage", "timings", …}
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  basalt chat --kb handbook\n\nType a question per line; \
    follow-ups may refer to earlier turns. An empty line, /exit or Ctrl-D ends the session."
)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    answer: AnswerArgs,
}

/// A knowledge base and the engines that answer from it, sharing one inference gate.
struct Loaded {
    kb: Arc<KnowledgeBase>,
    embedder: Arc<dyn Embedder>,
    generator: Box<dyn Generator>,
    options: AnswerOptions,
    guardrail: Option<Arc<Guardrail>>,
}

impl Loaded {
    fn new(args: &AnswerArgs, settings: &Settings) -> anyhow::Result<Self> {
        let filter = super::parse_filter(args.filter.as_deref())?;
        let (data, reader) = super::tenant_data_as(settings, args.as_principal.as_deref())?;
        let kb = Arc::new(data.open(&args.kb)?);
        let (embedder, generator) =
            super::load_chosen_engines(&kb, settings, args.model.as_deref(), args.context_size)?;
        let embedder: Arc<dyn Embedder> = Arc::from(embedder);
        let guardrail = args
            .guardrail
            .as_deref()
            .or(kb.settings.answer.guardrail.as_deref())
            .map(|reference| {
                let store = super::guardrails(&data);
                super::guard::load(store.as_ref(), reference, settings, Some(embedder.clone()))
                    .map(Arc::new)
            })
            .transpose()?;
        Ok(Loaded {
            kb,
            embedder,
            generator,
            options: AnswerOptions {
                passages: args.passages,
                mode: args.mode,
                fusion: None,
                filter,
                min_relevance: args.min_relevance,
                style: args.style,
                context_tokens: args.context_tokens,
                max_tokens: Some(args.max_tokens),
                temperature: args.temperature,
                seed: None,
                cancel: None,
                reader,
                screen: guardrail.clone(),
            },
            guardrail,
        })
    }

    fn engines(&self) -> Engines<'_> {
        Engines {
            embedder: self.embedder.as_ref(),
            generator: self.generator.as_ref(),
        }
    }

    /// Answers, streaming the text to stdout unless `quiet`, through the guardrail if there is
    /// one (see `basalt_answer::GuardedTurn`).
    fn answer(
        &self,
        question: &str,
        history: &[basalt_answer::HistoryTurn],
        quiet: bool,
    ) -> anyhow::Result<Answer> {
        let ask = Ask::Kb {
            kb: self.kb.clone(),
            question: question.to_owned(),
            history: history.to_vec(),
            options: Box::new(self.options.clone()),
        };
        let turn = GuardedTurn::new(ask, self.guardrail.clone());
        let cancel = Arc::new(AtomicBool::new(false));
        let stdout = std::io::stdout();
        let mut failed = None;
        let mut printed = false;
        let mut show = |event: TurnEvent| {
            if quiet || failed.is_some() {
                return;
            }
            let text = match event {
                TurnEvent::Sources(_) => return,
                TurnEvent::Delta(text) => text,
                TurnEvent::Blocked(text) if printed => format!("\n{text}"),
                TurnEvent::Blocked(text) => text,
            };
            printed |= !text.is_empty();
            let mut lock = stdout.lock();
            if let Err(error) = lock.write_all(text.as_bytes()).and_then(|()| lock.flush()) {
                // Stops the generation: nobody reads it.
                cancel.store(true, Ordering::Relaxed);
                failed = Some(error);
            }
        };
        let reply = turn.run(self.engines(), &cancel, &mut show);
        match failed {
            Some(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            Some(error) => Err(error.into()),
            None => Ok(reply?.answer),
        }
    }
}

pub(crate) fn ask(args: &AskArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let loaded = Loaded::new(&args.answer, settings)?;
    let answer = loaded.answer(&args.question, &[], args.json)?;
    if args.json {
        print_line(&serde_json::to_string_pretty(&answer)?)?;
    } else {
        print_line("")?;
        print_sources(&answer)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn chat(args: &ChatArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let loaded = Loaded::new(&args.answer, settings)?;
    let sessions = SessionStore::new(SessionPolicy::default());
    let session = sessions.create(&args.answer.kb, "cli")?;
    eprintln!(
        "Chatting with knowledge base {}. An empty line, /exit or Ctrl-D ends the session.",
        args.answer.kb
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let question = line.trim();
        if question.is_empty() || question == "/exit" {
            break;
        }
        let history = sessions
            .get(&session.id)?
            .map(|session| session.history())
            .unwrap_or_default();
        let answer = match loaded.answer(question, &history, false) {
            Ok(answer) => answer,
            Err(error) => {
                eprintln!("error: {error:#}");
                continue;
            }
        };
        print_line("")?;
        print_sources(&answer)?;
        sessions.record(&session.id, basalt_answer::Turn::new(question, &answer))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The numbered sources the answer cites (all passages given to the model when it cites none).
fn print_sources(answer: &Answer) -> anyhow::Result<()> {
    if answer.abstained || answer.sources.is_empty() {
        return Ok(());
    }
    let mut cited: Vec<usize> = answer
        .citations
        .iter()
        .flat_map(|citation| citation.references.iter().map(|reference| reference.number))
        .collect();
    cited.sort_unstable();
    cited.dedup();
    print_line("\nSources:")?;
    for source in &answer.sources {
        if !cited.is_empty() && !cited.contains(&source.number) {
            continue;
        }
        let snippet: String = source.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let snippet: String = if snippet.chars().count() > 160 {
            format!("{}…", snippet.chars().take(160).collect::<String>())
        } else {
            snippet
        };
        print_line(&format!(
            "[{}] {} — {}\n    {}",
            source.number,
            source.title.as_deref().unwrap_or("Untitled"),
            basalt_answer::location(source),
            snippet
        ))?;
    }
    if answer.removed_markers > 0 {
        print_line(&format!(
            "({} citation marker(s) that named no source were removed)",
            answer.removed_markers
        ))?;
    }
    Ok(())
}

// Basalt's web UI: a client of the server's own API (docs/ui.md). No framework and no build
// step: the DOM is built with createElement and textContent only, so no document text is ever
// parsed as HTML.
"use strict";

const KEY_STORAGE = "basalt.key";
const THEME_STORAGE = "basalt.theme";
const PLAIN_MODEL = "model:";

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  me: null,
  kbs: [],
  selectedKb: null,
  sessionId: null,
  sessionKb: null,
  plainHistory: [],
  controller: null,
};

const $ = (id) => document.getElementById(id);

/// An element with attributes and children (strings become text nodes).
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const all = { ...extra };
  if (state.key) all["Authorization"] = `Bearer ${state.key}`;
  return all;
}

/// The API's error message for a failed response, in words (never raw JSON).
async function failure(response) {
  let code = "http_" + response.status;
  let message = `The server answered ${response.status} ${response.statusText}.`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) {
    // Not JSON: keep the status line.
  }
  if (response.status === 429) message = "The server is busy. " + message;
  return new ApiError(response.status, code, message);
}

async function api(method, path, body, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: options.signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "Cannot reach the Basalt server. Is `basalt serve` running?");
  }
  if (!response.ok) {
    const error = await failure(response);
    if (response.status === 401 && !options.signingIn) signOut(error.message);
    throw error;
  }
  return response.json();
}

/// Server-sent events of a POST: calls `onEvent(name, data)` for each until the stream ends.
async function postEvents(path, body, signal, onEvent) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "Cannot reach the Basalt server. Is `basalt serve` running?");
  }
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

function allowed(action) {
  return Boolean(state.me && state.me.actions.includes(action));
}

function kbAllows(kb, action) {
  return Boolean(kb && kb.actions && kb.actions.includes(action));
}

// ------------------------------------------------------------------------------------------
// Messages to the user

function notify(message, kind = "error") {
  const close = el("button", { type: "button", class: "quiet", "aria-label": "Dismiss" }, "✕");
  const item = el("div", { class: `alert ${kind}` }, el("span", {}, message), close);
  close.addEventListener("click", () => item.remove());
  $("alerts").append(item);
  if (kind !== "error") setTimeout(() => item.remove(), 4000);
}

/// Runs `work`, showing its failure as a readable message.
async function attempt(work) {
  try {
    return await work();
  } catch (error) {
    if (error.name === "AbortError") return undefined;
    notify(error.message || String(error));
    return undefined;
  }
}

// ------------------------------------------------------------------------------------------
// Theme

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  const theme = dark ? "light" : "dark";
  localStorage.setItem(THEME_STORAGE, theme);
  applyTheme(theme);
}

// ------------------------------------------------------------------------------------------
// Sign-in and views

function show(view) {
  for (const name of ["signin", "chat", "kbs"]) $(`view-${name}`).hidden = name !== view;
  for (const button of document.querySelectorAll("#nav button")) {
    if (button.dataset.view === view) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  if (view === "kbs") refreshKbs();
  if (view === "chat") refreshSessions();
}

async function signIn(key, fromForm) {
  state.key = key;
  try {
    state.me = await api("GET", "/v1/me", undefined, { signingIn: true });
  } catch (error) {
    state.key = "";
    sessionStorage.removeItem(KEY_STORAGE);
    if (fromForm) notify(`That key was not accepted: ${error.message}`);
    else if (error.status !== 401) notify(error.message);
    showSignIn();
    return;
  }
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  $("who").textContent =
    state.me.auth === "local_demo" ? "local demo (no key)" : `${state.me.principal} · ${state.me.tenant}`;
  $("sign-out").hidden = state.me.auth === "local_demo";
  $("nav-kbs").hidden = !allowed("kb:List");
  $("create-kb").hidden = !allowed("kb:Create");
  await refreshKbs();
  $("nav").hidden = false;
  show("chat");
  $("question").focus();
}

function showSignIn() {
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  show("signin");
  $("api-key").focus();
}

function signOut(message) {
  if (state.controller) state.controller.abort();
  state.key = "";
  state.me = null;
  sessionStorage.removeItem(KEY_STORAGE);
  startNewChat();
  showSignIn();
  if (message) notify(message);
}

// ------------------------------------------------------------------------------------------
// Knowledge bases

async function refreshKbs() {
  if (!allowed("kb:List")) {
    state.kbs = [];
  } else {
    const listed = await attempt(() => api("GET", "/v1/kbs"));
    if (listed) state.kbs = listed.knowledge_bases;
  }
  renderKbList();
  renderTargets();
  if (state.selectedKb) {
    const kb = state.kbs.find((candidate) => candidate.name === state.selectedKb);
    if (kb) renderKbDetail(kb);
    else closeKbDetail();
  }
}

function renderTargets() {
  const select = $("chat-target");
  const previous = select.value;
  select.replaceChildren();
  for (const kb of state.kbs.filter((kb) => kbAllows(kb, "kb:Answer"))) {
    select.append(el("option", { value: kb.name }, `${kb.name} (${plural(kb.documents, "document", "documents")})`));
  }
  if (state.me && state.me.chat_model) {
    select.append(el("option", { value: PLAIN_MODEL }, `The model alone, no documents (${state.me.chat_model})`));
  }
  if (!select.options.length) {
    select.append(el("option", { value: "", disabled: true }, "Nothing this key may ask"));
  }
  const keep = [...select.options].find((option) => option.value === (state.sessionKb || previous));
  if (keep) select.value = keep.value;
}

function renderKbList() {
  const list = $("kb-list");
  list.replaceChildren();
  // Knowledge bases the key may do nothing with are left out.
  const usable = state.kbs.filter((kb) => kb.actions.length > 0);
  $("kbs-empty").hidden = usable.length > 0;
  for (const kb of usable) {
    const button = el(
      "button",
      { type: "button", class: "kb-item", "aria-pressed": String(kb.name === state.selectedKb) },
      el("strong", {}, kb.name),
      el("span", { class: "hint" }, `${plural(kb.documents, "document", "documents")} · ${plural(kb.chunks, "chunk", "chunks")}${kb.encrypted ? " · encrypted" : ""}`),
    );
    button.addEventListener("click", () => {
      state.selectedKb = kb.name;
      renderKbList();
      renderKbDetail(kb);
    });
    list.append(el("li", {}, button));
  }
}

function closeKbDetail() {
  state.selectedKb = null;
  $("kb-detail").hidden = true;
}

function renderKbDetail(kb) {
  $("kb-detail").hidden = false;
  $("kb-title").textContent = kb.name;
  $("delete-kb").hidden = !kbAllows(kb, "kb:Delete");
  $("upload-section").hidden = !kbAllows(kb, "kb:Ingest");
  $("search-section").hidden = !kbAllows(kb, "kb:Search");
  if (kbAllows(kb, "kb:ListDocuments")) refreshDocuments(kb);
  else {
    $("docs").querySelector("tbody").replaceChildren();
    $("docs-empty").hidden = false;
    $("docs-empty").textContent = "This key may not list this knowledge base's documents.";
  }
}

function plural(count, one, many) {
  return `${count.toLocaleString()} ${count === 1 ? one : many}`;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

async function refreshDocuments(kb) {
  const listed = await attempt(() => api("GET", `/v1/kbs/${encodeURIComponent(kb.name)}/documents?limit=1000`));
  if (!listed || state.selectedKb !== kb.name) return;
  const body = $("docs").querySelector("tbody");
  body.replaceChildren();
  $("docs-empty").hidden = listed.documents.length > 0;
  $("docs-empty").textContent = "No documents yet.";
  for (const doc of listed.documents) {
    const actions = el("td", {});
    if (kbAllows(kb, "kb:DeleteDocument")) {
      const label = doc.title || doc.source;
      actions.append(
        el("button", {
          type: "button",
          class: "danger small",
          "aria-label": `Delete ${label}`,
          onclick: () => deleteDocument(kb, doc),
        }, "Delete"),
      );
    }
    body.append(
      el("tr", { "data-doc": doc.doc_id },
        el("td", {}, el("strong", {}, doc.title || doc.source), el("div", { class: "hint" }, doc.source)),
        el("td", {}, doc.format),
        el("td", {}, `${doc.text_chars.toLocaleString()} chars${doc.pages ? ` · ${doc.pages} pages` : ""}`),
        el("td", {}, String(doc.chunk_count)),
        el("td", {}, el("span", { class: "badge ok" }, "indexed")),
        actions,
      ),
    );
  }
}

async function deleteDocument(kb, doc) {
  const label = doc.title || doc.source;
  if (!confirm(`Delete “${label}” and its chunks from ${kb.name}?`)) return;
  const done = await attempt(() =>
    api("DELETE", `/v1/kbs/${encodeURIComponent(kb.name)}/documents/${encodeURIComponent(doc.doc_id)}`),
  );
  if (done) {
    notify(`Deleted ${label}.`, "info");
    await refreshKbs();
  }
}

async function createKb(event) {
  event.preventDefault();
  const name = $("kb-name").value.trim();
  if (!name) return;
  const created = await attempt(() => api("POST", "/v1/kbs", { name }));
  if (created) {
    $("kb-name").value = "";
    state.selectedKb = created.name;
    notify(`Created ${created.name}.`, "info");
    await refreshKbs();
  }
}

async function deleteKb() {
  const name = state.selectedKb;
  if (!name || !confirm(`Delete the knowledge base ${name} and every document in it?`)) return;
  const done = await attempt(() => api("DELETE", `/v1/kbs/${encodeURIComponent(name)}`));
  if (done) {
    notify(`Deleted ${name}.`, "info");
    closeKbDetail();
    await refreshKbs();
  }
}

// Uploads: one request per file, so each has its own progress bar and its own errors.
function uploadFiles(files) {
  const kb = state.kbs.find((candidate) => candidate.name === state.selectedKb);
  if (!kb) return;
  for (const file of files) uploadOne(kb.name, file);
}

function uploadOne(kbName, file) {
  const bar = el("progress", { max: "100", value: "0", "aria-label": `Upload of ${file.name}` });
  const status = el("span", { class: "status" }, "uploading…");
  const item = el("li", { class: "upload" }, el("strong", {}, file.name), el("span", { class: "hint" }, formatBytes(file.size)), bar, status);
  $("uploads").prepend(item);
  const form = new FormData();
  form.append("file", file, file.name);
  const request = new XMLHttpRequest();
  request.open("POST", `/v1/kbs/${encodeURIComponent(kbName)}/documents`);
  if (state.key) request.setRequestHeader("Authorization", `Bearer ${state.key}`);
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) bar.value = Math.round((event.loaded / event.total) * 100);
  });
  const fail = (message) => {
    item.classList.add("failed");
    status.textContent = message;
  };
  request.addEventListener("error", () => fail("could not reach the server"));
  request.addEventListener("load", () => {
    let body = null;
    try {
      body = JSON.parse(request.responseText);
    } catch (_) {
      // Not JSON.
    }
    if (request.status >= 400) {
      fail((body && body.error && body.error.message) || `the server answered ${request.status}`);
      return;
    }
    bar.value = 100;
    status.textContent = "queued for ingestion…";
    followJob(body.id, item, status, fail);
  });
  request.send(form);
}

async function followJob(id, item, status, fail) {
  for (;;) {
    let job;
    try {
      job = await api("GET", `/v1/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      fail(error.message);
      return;
    }
    if (job.status === "queued") status.textContent = "queued for ingestion…";
    if (job.status === "running") {
      status.textContent = `ingesting… ${job.progress.chunks_done} chunks`;
    }
    if (job.status === "failed") {
      fail(`ingestion failed: ${job.error || "see the server log"}`);
      return;
    }
    if (job.status === "completed") {
      const report = job.report || { failed: [], skipped: [] };
      const problems = [...report.failed, ...report.skipped];
      if (problems.length) {
        fail(problems.map((problem) => problem.reason).join("; "));
      } else {
        item.classList.add("done");
        status.textContent =
          report.unchanged > 0 && report.added + report.replaced === 0
            ? "unchanged (already ingested)"
            : `ingested · ${plural(report.chunks, "chunk", "chunks")}`;
      }
      await refreshKbs();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
}

async function search(event) {
  event.preventDefault();
  const kb = state.selectedKb;
  const query = $("search-query").value.trim();
  if (!kb || !query) return;
  const body = { query, k: 10 };
  if ($("search-mode").value) body.mode = $("search-mode").value;
  const hits = $("hits");
  hits.replaceChildren();
  hits.setAttribute("aria-busy", "true");
  const found = await attempt(() => api("POST", `/v1/kbs/${encodeURIComponent(kb)}/search`, body));
  hits.removeAttribute("aria-busy");
  if (!found) return;
  if (!found.results.hits.length) {
    hits.append(el("li", { class: "hint" }, "No passage matches."));
    return;
  }
  for (const hit of found.results.hits) {
    hits.append(
      el("li", { class: "hit" },
        el("div", { class: "hit-head" },
          el("strong", {}, hit.title || hit.source),
          el("span", { class: "score", title: `${found.results.mode} score` }, hit.score.toFixed(4)),
        ),
        el("div", { class: "hint" }, [hit.source, hit.page ? `page ${hit.page}` : null, (hit.heading_path || []).join(" › ")].filter(Boolean).join(" · ")),
        el("p", {}, hit.text.length > 400 ? hit.text.slice(0, 400) + "…" : hit.text),
      ),
    );
  }
}

// ------------------------------------------------------------------------------------------
// Chat

function startNewChat() {
  if (state.controller) state.controller.abort();
  state.sessionId = null;
  state.sessionKb = null;
  state.plainHistory = [];
  $("messages").replaceChildren();
  $("chat-empty").hidden = false;
  closePassage();
  for (const button of document.querySelectorAll(".session-list button")) button.removeAttribute("aria-current");
}

async function refreshSessions() {
  const list = $("session-list");
  if (!allowed("session:List")) return;
  const listed = await attempt(() => api("GET", "/v1/sessions"));
  list.replaceChildren();
  const sessions = listed ? listed.sessions.filter((session) => session.turns > 0) : [];
  $("sessions-empty").hidden = sessions.length > 0;
  for (const session of sessions) {
    const button = el(
      "button",
      { type: "button", class: "session", "aria-current": session.id === state.sessionId ? "true" : null },
      el("span", { class: "session-title" }, session.title),
      el("span", { class: "hint" },  `${session.kb} · ${plural(session.turns, "turn", "turns")} · ${new Date(session.started * 1000).toLocaleTimeString()}`),
    );
    button.addEventListener("click", () => resumeSession(session.id));
    list.append(el("li", {}, button));
  }
}

async function resumeSession(id) {
  const session = await attempt(() => api("GET", `/v1/sessions/${encodeURIComponent(id)}`));
  if (!session) return;
  startNewChat();
  state.sessionId = session.id;
  state.sessionKb = session.kb;
  renderTargets();
  $("chat-empty").hidden = session.turns.length > 0;
  for (const turn of session.turns) {
    addQuestion(turn.question);
    const message = addAnswer();
    renderAnswer(message, {
      answer: turn.answer,
      abstained: turn.abstained,
      citations: turn.citations || [],
      sources: [],
    });
  }
  refreshSessions();
  $("question").focus();
}

function addQuestion(text) {
  $("chat-empty").hidden = true;
  const item = el("li", { class: "message question" }, el("span", { class: "visually-hidden" }, "You asked: "), text);
  $("messages").append(item);
  return item;
}

function addAnswer() {
  const body = el("div", { class: "body" });
  const tools = el("div", { class: "tools" });
  const item = el("li", { class: "message answer pending", "aria-busy": "true" }, body, tools);
  item.body = body;
  item.tools = tools;
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function setStreaming(streaming) {
  $("ask").hidden = streaming;
  $("stop").hidden = !streaming;
  $("question").disabled = streaming;
  if (!streaming) $("question").focus();
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  const target = $("chat-target").value;
  if (!question || !target) return;
  $("question").value = "";
  addQuestion(question);
  const message = addAnswer();
  const controller = new AbortController();
  state.controller = controller;
  setStreaming(true);
  try {
    if (target === PLAIN_MODEL) await askModel(question, message, controller.signal);
    else await askKb(target, question, message, controller.signal);
  } catch (error) {
    if (error.name === "AbortError") {
      message.classList.add("stopped");
      message.tools.prepend(el("span", { class: "hint" }, "Stopped."));
    } else {
      message.classList.add("failed");
      message.body.replaceChildren(el("p", {}, error.message || String(error)));
    }
  } finally {
    message.classList.remove("pending");
    message.removeAttribute("aria-busy");
    if (state.controller === controller) state.controller = null;
    setStreaming(false);
  }
}

async function askKb(kb, question, message, signal) {
  if (state.sessionKb !== kb) {
    state.sessionId = null;
    state.sessionKb = kb;
  }
  try {
    await askInSession(kb, question, message, signal);
  } catch (error) {
    if (error.code !== "session_not_found") throw error;
    // The server forgot the conversation (it expired or the server restarted): go on in a
    // new one.
    state.sessionId = null;
    notify("The earlier conversation had expired on the server; this question starts a new one.", "info");
    await askInSession(kb, question, message, signal);
  }
  refreshSessions();
}

async function askInSession(kb, question, message, signal) {
  if (!state.sessionId && allowed("session:Create")) {
    const session = await api("POST", "/v1/sessions", { kb });
    state.sessionId = session.id;
  }
  const body = { question, stream: true };
  if (state.sessionId) body.session_id = state.sessionId;
  let text = "";
  let finished = false;
  await postEvents(`/v1/kbs/${encodeURIComponent(kb)}/answer`, body, signal, (name, data) => {
    const payload = JSON.parse(data);
    // How many pieces arrived before the answer was complete (shown to tests and tools).
    message.dataset.events = String(Number(message.dataset.events || 0) + 1);
    if (name === "delta") {
      text += payload.text;
      message.body.textContent = text;
    } else if (name === "replace") {
      text = payload.text;
      message.body.textContent = text;
    } else if (name === "answer") {
      finished = true;
      renderAnswer(message, payload);
    } else if (name === "error") {
      finished = true;
      throw new ApiError(500, payload.error.code, payload.error.message);
    }
  });
  if (!finished) throw new ApiError(0, "incomplete", "The answer stopped before it was finished. Try again.");
}

async function askModel(question, message, signal) {
  const messages = [...state.plainHistory, { role: "user", content: question }];
  let text = "";
  await postEvents("/v1/chat/completions", { model: state.me.chat_model, messages, stream: true }, signal, (_name, data) => {
    if (data === "[DONE]") return;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(500, chunk.error.code, chunk.error.message);
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) {
      text += delta.content;
      message.body.textContent = text;
    }
  });
  state.plainHistory.push({ role: "user", content: question }, { role: "assistant", content: text });
  renderAnswer(message, { answer: text, abstained: false, citations: [], sources: [], plain: true });
}

/// The finished answer: its text with citation markers as links, and its tools.
function renderAnswer(message, answer) {
  message.body.replaceChildren();
  message.classList.toggle("not-found", Boolean(answer.abstained));
  if (answer.abstained) {
    message.body.append(el("p", { class: "not-found-label" }, "Not found in the documents"));
  }
  if (answer.guardrail_blocked) {
    message.body.append(el("p", { class: "not-found-label" }, "Stopped by a guardrail"));
  }
  message.body.append(el("p", { class: "answer-text" }, citedText(answer)));
  if (answer.extractive) {
    message.body.append(el("p", { class: "hint" }, "Quoted from the best-matching passage."));
  }
  if (answer.plain) message.body.append(el("p", { class: "hint" }, "From the model alone: no documents were used."));
  const copy = el("button", { type: "button", class: "quiet small", "aria-label": "Copy the answer" }, "Copy");
  copy.addEventListener("click", () => copyText(answer.answer, copy));
  message.tools.replaceChildren(copy);
  message.scrollIntoView({ block: "end" });
}

/// The sentence of passage `number` the server says supports `citation` (character offsets).
function supportOf(citation, number) {
  return ((citation && citation.support) || []).find((support) => support.number === number) || null;
}

/// Where in the answer each `[n]` marker stands, and which citation covers it.
function citedText(answer) {
  const chars = Array.from(answer.answer);
  const fragment = document.createDocumentFragment();
  const citations = answer.citations || [];
  const referenceOf = (number, position) => {
    const covering = citations.find((citation) => position >= citation.span.start && position <= citation.span.end);
    const citation = covering || citations.find((candidate) => candidate.references.some((r) => r.number === number));
    const reference =
      (citation && citation.references.find((r) => r.number === number)) ||
      (answer.sources || []).find((source) => source.number === number);
    if (!reference) return null;
    const span = citation ? chars.slice(citation.span.start, citation.span.end).join("") : "";
    return { reference, span, support: supportOf(citation, number) };
  };
  // Citations Basalt matched (no marker in the text) get their links after their span.
  const after = new Map();
  for (const citation of citations.filter((c) => c.kind === "matched")) {
    const list = after.get(citation.span.end) || [];
    for (const reference of citation.references) {
      list.push({
        reference,
        span: chars.slice(citation.span.start, citation.span.end).join(""),
        support: supportOf(citation, reference.number),
      });
    }
    after.set(citation.span.end, list);
  }
  let plain = "";
  const flush = () => {
    if (plain) fragment.append(plain);
    plain = "";
  };
  for (let index = 0; index <= chars.length; index++) {
    for (const cited of after.get(index) || []) {
      flush();
      fragment.append(citationLink(cited));
    }
    if (index === chars.length) break;
    if (chars[index] === "[") {
      let close = index + 1;
      while (close < chars.length && /[0-9]/.test(chars[close])) close++;
      if (close > index + 1 && chars[close] === "]") {
        const number = Number(chars.slice(index + 1, close).join(""));
        const cited = referenceOf(number, index);
        if (cited) {
          flush();
          fragment.append(citationLink(cited));
          index = close;
          continue;
        }
      }
    }
    plain += chars[index];
  }
  flush();
  return fragment;
}

function citationLink(cited) {
  const { reference } = cited;
  const label = reference.title || reference.source;
  const link = el("a", { href: "#passage", class: "cite", "aria-label": `Source ${reference.number}: ${label}`, title: label }, `[${reference.number}]`);
  link.addEventListener("click", (event) => {
    event.preventDefault();
    for (const other of document.querySelectorAll(".cite.active")) other.classList.remove("active");
    link.classList.add("active");
    openPassage(cited, link);
  });
  return link;
}

const STOP_WORDS = new Set(
  "a an and are as at be but by for from has have he her his i in is it its of on or she that the their them they this to was were what when where which who will with you your not no can do does did than then there these those been being into about over under also such".split(" "),
);

function contentWords(text) {
  return new Set(
    (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((word) => word.length > 1 && !STOP_WORDS.has(word)),
  );
}

/// The passage's sentences, each marked when it shares most of the cited span's words.
function highlightedPassage(text, span, support) {
  if (support) {
    // The server's supporting sentence, by character offsets.
    const chars = Array.from(text);
    const fragment = document.createDocumentFragment();
    fragment.append(chars.slice(0, support.start).join(""));
    fragment.append(el("mark", {}, chars.slice(support.start, support.end).join("")));
    fragment.append(chars.slice(support.end).join(""));
    return fragment;
  }
  // Without one (an older server), guess by word overlap.
  const sentences = text.match(/[^.!?\n]+(?:[.!?]+["')\]]*|\n+|$)\s*/g) || [text];
  const wanted = contentWords(span.replace(/\[\d+\]/g, ""));
  const overlap = sentences.map((sentence) => {
    if (!wanted.size) return 0;
    const words = contentWords(sentence);
    let shared = 0;
    for (const word of wanted) if (words.has(word)) shared++;
    return shared / wanted.size;
  });
  const best = Math.max(0, ...overlap);
  const fragment = document.createDocumentFragment();
  sentences.forEach((sentence, index) => {
    if (best > 0 && overlap[index] >= best * 0.6 && overlap[index] > 0.15) {
      fragment.append(el("mark", {}, sentence));
    } else {
      fragment.append(sentence);
    }
  });
  return fragment;
}

function openPassage(cited, opener) {
  const { reference, span, support } = cited;
  $("passage").hidden = false;
  $("passage").opener = opener;
  $("passage-title").textContent = `[${reference.number}] ${reference.title || reference.source}`;
  const meta = $("passage-meta");
  meta.replaceChildren();
  const row = (term, value) => value && meta.append(el("dt", {}, term), el("dd", {}, value));
  row("Source", reference.source);
  row("Page", reference.page ? String(reference.page) : null);
  row("Section", (reference.heading_path || []).join(" › ") || null);
  row("Supports", span || null);
  $("passage-text").replaceChildren(highlightedPassage(reference.text, span, support));
  $("passage-title").focus();
  const mark = $("passage-text").querySelector("mark");
  if (mark) mark.scrollIntoView({ block: "nearest" });
}

function closePassage() {
  const passage = $("passage");
  if (passage.hidden) return;
  passage.hidden = true;
  for (const other of document.querySelectorAll(".cite.active")) other.classList.remove("active");
  if (passage.opener && passage.opener.isConnected) passage.opener.focus();
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const area = el("textarea", { class: "visually-hidden" }, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

// ------------------------------------------------------------------------------------------
// Wiring

function init() {
  applyTheme(localStorage.getItem(THEME_STORAGE));
  $("theme").addEventListener("click", toggleTheme);
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("api-key").value.trim(), true);
    $("api-key").value = "";
  });
  $("sign-out").addEventListener("click", () => signOut());
  for (const button of document.querySelectorAll("#nav button")) {
    button.addEventListener("click", () => show(button.dataset.view));
  }
  $("new-chat").addEventListener("click", () => {
    startNewChat();
    refreshSessions();
    $("question").focus();
  });
  $("chat-target").addEventListener("change", () => {
    if (state.sessionKb && $("chat-target").value !== state.sessionKb) startNewChat();
  });
  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("passage-close").addEventListener("click", closePassage);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closePassage();
  });
  $("create-kb").addEventListener("submit", createKb);
  $("delete-kb").addEventListener("click", deleteKb);
  $("search-form").addEventListener("submit", search);
  $("files").addEventListener("change", () => {
    uploadFiles([...$("files").files]);
    $("files").value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    uploadFiles([...event.dataTransfer.files]);
  });
  // A server without keys (local demo) answers /v1/me without one.
  signIn(state.key, false);
}

document.addEventListener("DOMContentLoaded", init);

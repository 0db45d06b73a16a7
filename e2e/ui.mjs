// Drives Basalt's web UI in headless Chromium as a newcomer would, at desktop and phone
// widths, saving a screenshot of every step. Run by crates/basalt-cli/tests/ui.rs, which starts
// `basalt serve` and passes:
//   BASALT_URL          the server, like http://127.0.0.1:8080
//   BASALT_ADMIN_KEY    a key with AdministratorAccess
//   BASALT_READER_KEY   a key that may only search and ask the knowledge base `shared`
//   BASALT_DOCUMENT     a PDF to upload, holding the answer to BASALT_QUESTION
//   BASALT_BROKEN       a file that is not a valid PDF (its error must be shown in words)
//   BASALT_QUESTION     the question; BASALT_EXPECT: text the answer must contain
//   BASALT_SEARCH       a query that finds the document
//   BASALT_OFF_TOPIC    a question the document does not answer
//   BASALT_SCREENSHOTS  where the screenshots go
//   CHROMIUM            the browser (default /usr/bin/chromium)
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { basename, join } from "node:path";

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = need("BASALT_URL");
const adminKey = need("BASALT_ADMIN_KEY");
const readerKey = need("BASALT_READER_KEY");
const documentPath = need("BASALT_DOCUMENT");
const brokenPath = need("BASALT_BROKEN");
const question = need("BASALT_QUESTION");
const expected = need("BASALT_EXPECT");
const searchQuery = need("BASALT_SEARCH");
const offTopic = need("BASALT_OFF_TOPIC");
const shots = need("BASALT_SCREENSHOTS");
mkdirSync(shots, { recursive: true });

const KB = "e2e-handbook";
const ANSWER_TIMEOUT = 300_000;
let step = 0;

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function shot(page, name) {
  step += 1;
  const file = join(shots, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

/// No message on the page is raw JSON or an HTTP status page.
async function readableAlerts(page) {
  const texts = await page.locator(".alert").allTextContents();
  for (const text of texts) check(!/^\s*[{[]/.test(text) && !text.includes('"error"'), `alert is raw JSON: ${text}`);
  return texts;
}

async function dismissAlerts(page) {
  while ((await page.locator(".alert button").count()) > 0) await page.locator(".alert button").first().click();
}

async function signIn(page, key) {
  await page.goto(url);
  await page.locator("#view-signin").waitFor({ state: "visible" });
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#nav").waitFor({ state: "visible" });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const failures = [];
try {
  // ---------------------------------------------------------------- desktop, as the admin
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await desktop.newPage();
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // A refused request is logged by the browser as a failed resource; the page shows it in words.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      failures.push(`console error: ${message.text()}`);
    }
  });
  page.on("dialog", (dialog) => dialog.accept());

  await page.goto(url);
  await page.locator("#view-signin").waitFor({ state: "visible" });
  await shot(page, "sign-in");

  // A wrong key is refused in words.
  await page.getByLabel("API key").fill("bsk_not_a_real_key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator(".alert").first().waitFor();
  const refused = await readableAlerts(page);
  check(refused.some((text) => text.includes("not accepted")), `wrong key message: ${refused}`);
  check(await page.locator("#view-signin").isVisible(), "still at sign-in after a wrong key");
  await shot(page, "wrong-key");
  await dismissAlerts(page);

  await page.getByLabel("API key").fill(adminKey);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#nav").waitFor({ state: "visible" });
  check((await page.locator("#who").textContent()).includes("admin"), "shows who is signed in");
  const stored = await page.evaluate(() => [sessionStorage.getItem("basalt.key"), localStorage.getItem("basalt.key")]);
  check(stored[0] && !stored[1], "the key is in session storage only");

  // A knowledge base, created in the UI.
  await page.getByRole("button", { name: "Knowledge bases" }).click();
  await page.getByLabel("New knowledge base").fill(KB);
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator("#kb-title", { hasText: KB }).waitFor();
  // A name that is taken is refused in words.
  await page.getByLabel("New knowledge base").fill(KB);
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator(".alert.error").first().waitFor();
  const taken = await readableAlerts(page);
  check(taken.some((text) => text.toLowerCase().includes("exists") || text.toLowerCase().includes("taken")), `taken name: ${taken}`);
  await dismissAlerts(page);
  await shot(page, "knowledge-base-created");

  // Two files at once: a real PDF and a broken one, each with its own status.
  await page.locator("#files").setInputFiles([documentPath, brokenPath]);
  const good = page.locator(".upload", { hasText: basename(documentPath) });
  const bad = page.locator(".upload", { hasText: basename(brokenPath) });
  await good.and(page.locator(".done")).waitFor({ timeout: ANSWER_TIMEOUT });
  await bad.and(page.locator(".failed")).waitFor({ timeout: ANSWER_TIMEOUT });
  const badStatus = await bad.locator(".status").textContent();
  check(badStatus.length > 10 && !badStatus.includes("{"), `the broken file's error in words: ${badStatus}`);
  // A file dropped on the drop area.
  await page.evaluate(() => {
    const transfer = new DataTransfer();
    transfer.items.add(new File(["# Plants\n\nThe office plants are watered every Monday morning.\n"], "plants.md", { type: "text/markdown" }));
    const drop = document.getElementById("drop");
    drop.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    drop.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
  });
  await page.locator(".upload.done", { hasText: "plants.md" }).waitFor({ timeout: ANSWER_TIMEOUT });
  const docRows = page.locator("#docs tbody tr");
  await page.waitForFunction(() => document.querySelectorAll("#docs tbody tr").length === 2);
  const pdfRow = docRows.filter({ hasText: basename(documentPath) });
  const rowText = await pdfRow.textContent();
  const title = basename(documentPath).replace(/\.pdf$/, "");
  check(rowText.startsWith(title) && rowText.includes("pdf") && rowText.includes("2 pages"), `the PDF's row shows title, format, size and chunks: ${rowText}`);
  await shot(page, "uploaded");

  // Search shows hits with scores.
  await page.getByPlaceholder("Search this knowledge base").fill(searchQuery);
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.locator(".hit").first().waitFor();
  const score = await page.locator(".hit .score").first().textContent();
  check(/\d\.\d{4}/.test(score), `hit score: ${score}`);
  await shot(page, "search");

  // Chat: pick the knowledge base, ask, watch the answer stream.
  await page.getByRole("button", { name: "Chat" }).click();
  await page.getByLabel("Answer from").selectOption(KB);
  await page.getByLabel("Your question").fill(question);
  await page.getByRole("button", { name: "Ask" }).click();
  await page.locator("#stop").waitFor({ state: "visible" });
  const answer = page.locator(".message.answer").last();
  await answer.locator(".cite").first().waitFor({ timeout: ANSWER_TIMEOUT });
  await page.locator("#ask").waitFor({ state: "visible" });
  const answerText = await answer.locator(".answer-text").textContent();
  check(answerText.includes(expected), `the answer holds ${expected}: ${answerText}`);
  check(!(await answer.evaluate((node) => node.classList.contains("not-found"))), "answered, not abstained");
  const events = Number(await answer.getAttribute("data-events"));
  console.log(`answer: ${answerText} (${events} stream events)`);
  check(events >= 3, `the answer streamed (sources, text, answer): ${events} events`);
  await shot(page, "answer-with-citation");

  // The citation opens the passage, its source and the highlighted supporting sentence.
  await answer.locator(".cite").first().click();
  await page.locator("#passage").waitFor({ state: "visible" });
  const highlighted = await page.locator("#passage-text mark").allTextContents();
  check(highlighted.join(" ").includes(expected), `the highlighted span holds ${expected}: ${highlighted}`);
  const meta = await page.locator("#passage-meta").textContent();
  check(meta.includes(basename(documentPath)) && meta.includes("Page"), `source and page shown: ${meta}`);
  await shot(page, "citation-passage");
  await page.keyboard.press("Escape");
  check(await page.locator("#passage").isHidden(), "Escape closes the passage");

  // Copy.
  await answer.getByRole("button", { name: "Copy the answer" }).click();
  await answer.getByText("Copied").waitFor();

  // Sessions are listed.
  await page.locator(".session", { hasText: question.slice(0, 20) }).first().waitFor();

  // A question the documents do not answer looks different.
  await page.getByLabel("Your question").fill(offTopic);
  await page.getByLabel("Your question").press("Enter");
  const notFound = page.locator(".message.answer").last();
  await notFound.and(page.locator(".not-found")).waitFor({ timeout: ANSWER_TIMEOUT });
  check((await notFound.textContent()).includes("Not found in the documents"), "the not-found answer says so");
  await shot(page, "not-found");

  // The model alone, stopped while it writes.
  await page.getByRole("button", { name: "New chat" }).click();
  await page.getByLabel("Answer from").selectOption("model:");
  await page.getByLabel("Your question").fill("Write a long story about a lighthouse keeper and the sea.");
  await page.getByRole("button", { name: "Ask" }).click();
  const story = page.locator(".message.answer").last();
  await story.locator(".body").filter({ hasText: /\w+/ }).waitFor({ timeout: ANSWER_TIMEOUT });
  await page.getByRole("button", { name: "Stop" }).click();
  await story.getByText("Stopped.").waitFor();
  await page.locator("#ask").waitFor({ state: "visible" });
  await shot(page, "model-stopped");

  // Dark theme.
  await page.getByRole("button", { name: "Switch between light and dark theme" }).click();
  check((await page.evaluate(() => document.documentElement.dataset.theme)) !== undefined, "theme set");
  await shot(page, "dark-theme");
  await page.getByRole("button", { name: "Switch between light and dark theme" }).click();

  // ---------------------------------------------------------------- a phone, same admin
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  small.on("pageerror", (error) => failures.push(`phone page error: ${error.message}`));
  await signIn(small, adminKey);
  await small.locator(".session").first().waitFor();
  await shot(small, "phone-chat");
  // The conversation resumes with its citations.
  await small.locator(".session", { hasText: question.slice(0, 20) }).first().click();
  const resumed = small.locator(".message.answer").first();
  await resumed.locator(".cite").first().waitFor();
  await resumed.locator(".cite").first().click();
  await small.locator("#passage mark").first().waitFor();
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no sideways scrolling on a phone (${overflow}px)`);
  await shot(small, "phone-passage");
  await small.getByRole("button", { name: "Close the passage" }).click();
  // The server forgets the conversation (as when it expires): the next question starts a new one.
  await small.evaluate(async () => {
    const auth = { Authorization: `Bearer ${sessionStorage.getItem("basalt.key")}` };
    const { sessions } = await (await fetch("/v1/sessions", { headers: auth })).json();
    for (const session of sessions) await fetch(`/v1/sessions/${session.id}`, { method: "DELETE", headers: auth });
  });
  const notFoundBefore = await small.locator(".message.answer.not-found").count();
  await small.getByLabel("Your question").fill(offTopic);
  await small.getByRole("button", { name: "Ask" }).click();
  await small.locator(".alert.info", { hasText: "expired" }).waitFor();
  await small.waitForFunction(
    (before) => document.querySelectorAll(".message.answer.not-found").length > before,
    notFoundBefore,
    { timeout: ANSWER_TIMEOUT },
  );
  await small.getByRole("button", { name: "Knowledge bases" }).click();
  await small.locator(".kb-item", { hasText: KB }).click();
  await small.locator("#docs tbody tr").first().waitFor();
  const kbOverflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(kbOverflow <= 1, `no sideways scrolling of the knowledge base page on a phone (${kbOverflow}px)`);
  await shot(small, "phone-knowledge-base");
  await phone.close();

  // ---------------------------------------------------------------- a reader key
  const limited = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const reader = await limited.newPage();
  reader.on("pageerror", (error) => failures.push(`reader page error: ${error.message}`));
  await signIn(reader, readerKey);
  await reader.locator("#chat-target option", { hasText: "shared" }).waitFor({ state: "attached" });
  const targets = await reader.locator("#chat-target option").allTextContents();
  check(targets.some((text) => text.startsWith("shared")) && !targets.some((text) => text.startsWith(KB)), `reader sees only what it may ask: ${targets}`);
  await reader.getByRole("button", { name: "Knowledge bases" }).click();
  await reader.locator(".kb-item").first().waitFor();
  check(await reader.locator("#create-kb").isHidden(), "no create form without kb:Create");
  check((await reader.locator(".kb-item").count()) === 1, "only the knowledge base the reader may use is listed");
  await reader.locator(".kb-item", { hasText: "shared" }).click();
  check(await reader.locator("#delete-kb").isHidden(), "no delete without kb:Delete");
  check(await reader.locator("#upload-section").isHidden(), "no upload without kb:Ingest");
  check(await reader.locator("#search-section").isVisible(), "search with kb:Search");
  await shot(reader, "reader-key");
  await limited.close();

  // ---------------------------------------------------------------- delete, as the admin
  await page.getByRole("button", { name: "Knowledge bases" }).click();
  await page.locator(".kb-item", { hasText: KB }).click();
  await page.locator("#docs tbody tr").first().waitFor();
  await page.getByRole("button", { name: `Delete ${title}` }).click();
  await page.waitForFunction(() => document.querySelectorAll("#docs tbody tr").length === 1);
  check((await page.locator("#docs tbody tr", { hasText: basename(documentPath) }).count()) === 0, "the document is gone from the list");
  await page.getByPlaceholder("Search this knowledge base").fill(searchQuery);
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.locator(".hit").first().waitFor();
  const remaining = await page.locator(".hit").allTextContents();
  check(remaining.every((hit) => !hit.includes(basename(documentPath)) && !hit.includes("45 euros")), `the document is gone from search: ${remaining}`);
  await shot(page, "document-deleted");
  await readableAlerts(page);
  await desktop.close();
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`ui: ${step} steps passed`);

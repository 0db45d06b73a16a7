//! What kind of quantity a question asks for, and whether a sentence states one.
//!
//! A question that asks "how much", "how long" or "on what date" is not answered by a sentence
//! without an amount, a length of time or a date, however close its words: "How long is the
//! break between cycles?" is not answered by "There are typically six cycles to a year" but by
//! "… we spend two weeks cooling down", and "What's the dollar budget per person for a mini
//! meet-up?" is not answered by "Limit yourself to 1 mini meet-up per year". An answer to
//! such a question quotes the best sentence that states the kind asked for, or declines
//! (docs/answers.md, "Questions that ask for a quantity").

/// The kind of quantity a question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quantity {
    /// An amount of money or a share of one: "How much does the company pay for …", "What's
    /// the annual deductible?", "What share of the premium …".
    Amount,
    /// A length of time: "How long …", "How many days …", "How much notice …".
    Duration,
    /// How often: "How often …", "How many times …".
    Frequency,
    /// A date, day, month, year or time of day: "On what date …", "What year …".
    Date,
    /// Any other number: "How many jurors …", "How old …".
    Count,
}

/// Units of time: after a number they make a duration ("two weeks", "6-week").
const TIME_UNITS: [&str; 16] = [
    "second", "seconds", "minute", "minutes", "hour", "hours", "day", "days", "week", "weeks",
    "month", "months", "year", "years", "quarter", "quarters",
];

/// What "how much" asks about when it asks for a length of time: "How much notice …".
const TIME_NOUNS: [&str; 9] = [
    "time",
    "notice",
    "leave",
    "vacation",
    "holiday",
    "holidays",
    "pto",
    "sabbatical",
    "off",
];

/// Words that make a "how much" question one about money ("How much does it cost …", "How
/// much will the company reimburse …").
const MONEY_VERBS: [&str; 22] = [
    "cost",
    "costs",
    "pay",
    "paid",
    "pays",
    "spend",
    "spent",
    "reimburse",
    "reimbursed",
    "reimburses",
    "charge",
    "charged",
    "earn",
    "earns",
    "contribute",
    "contributes",
    "match",
    "matches",
    "deducted",
    "worth",
    "money",
    "dollars",
];

/// Nouns that name an amount of money: "What's the deductible?", "What is the travel
/// allowance?". A "what" question about one asks for the amount. (Not "rate", "premium" or
/// "bonus": "What is the literacy rate …", "What is premium economy?")
const MONEY_NOUNS: [&str; 16] = [
    "deductible",
    "copay",
    "co-pay",
    "allowance",
    "stipend",
    "budget",
    "salary",
    "price",
    "fee",
    "fees",
    "cost",
    "reimbursement",
    "dollar",
    "dollars",
    "per-diem",
    "diem",
];

/// Phrases that ask for one kind of quantity and admit nothing else, checked in order.
const PHRASES: [(&str, Quantity); 26] = [
    ("how often", Quantity::Frequency),
    ("how frequently", Quantity::Frequency),
    ("how many times", Quantity::Frequency),
    ("what year", Quantity::Date),
    ("which year", Quantity::Date),
    ("what date", Quantity::Date),
    ("what day", Quantity::Date),
    ("which day", Quantity::Date),
    ("what month", Quantity::Date),
    ("which month", Quantity::Date),
    ("what time", Quantity::Date),
    ("how long", Quantity::Duration),
    ("how soon", Quantity::Duration),
    ("what percentage", Quantity::Amount),
    ("what percent", Quantity::Amount),
    ("what share", Quantity::Amount),
    ("what portion", Quantity::Amount),
    ("what proportion", Quantity::Amount),
    ("how many", Quantity::Count),
    ("how much", Quantity::Count),
    ("how old", Quantity::Count),
    ("how far", Quantity::Count),
    ("how big", Quantity::Count),
    ("how large", Quantity::Count),
    ("what age", Quantity::Count),
    ("number of", Quantity::Count),
];

/// The kind of quantity `question` asks for in words that admit nothing else, or `None`. A
/// "when" question is not one: "When do you need to blind bake pastry?" is answered by a
/// condition.
pub(crate) fn asked(question: &str) -> Option<Quantity> {
    let words = words(question);
    let padded = format!(" {} ", words.join(" "));
    let phrase = PHRASES
        .iter()
        .find(|(phrase, _)| padded.contains(&format!(" {phrase} ")));
    if let Some((phrase, kind)) = phrase {
        if *kind != Quantity::Count {
            return Some(*kind);
        }
        // "How many days …", "How much notice …": a length of time. "How much does it cost
        // …": an amount of money.
        let start = padded.find(&format!(" {phrase} ")).unwrap_or(0) + phrase.len() + 1;
        let after: Vec<&str> = padded[start..].split_whitespace().take(3).collect();
        if after
            .iter()
            .any(|word| TIME_UNITS.contains(word) || TIME_NOUNS.contains(word))
        {
            return Some(Quantity::Duration);
        }
        if *phrase == "how much"
            && words
                .iter()
                .any(|word| MONEY_VERBS.contains(&word.as_str()) || is_money_noun(word))
        {
            return Some(Quantity::Amount);
        }
        return Some(Quantity::Count);
    }
    // "What's the annual deductible …?", "What is the daily meal allowance?"
    let opens_with_what = words
        .first()
        .is_some_and(|first| matches!(first.as_str(), "what" | "what's" | "what\u{2019}s"));
    (opens_with_what && words.iter().any(|word| is_money_noun(word))).then_some(Quantity::Amount)
}

fn is_money_noun(word: &str) -> bool {
    MONEY_NOUNS.contains(&word)
}

/// A question's words, lower-cased, apostrophes and hyphens kept ("what's", "co-pay").
fn words(question: &str) -> Vec<String> {
    question
        .split(|c: char| !c.is_alphanumeric() && !matches!(c, '\'' | '\u{2019}' | '-'))
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Words that say how often by themselves: "once a year", "weekly".
const FREQUENCY_WORDS: [&str; 10] = [
    "once",
    "twice",
    "thrice",
    "daily",
    "weekly",
    "biweekly",
    "monthly",
    "yearly",
    "annually",
    "quarterly",
];

/// Names of months (but "may") and days: a date.
const MONTHS_AND_DAYS: [&str; 18] = [
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Number words beyond those up to ninety the verifier reads as numbers.
const MORE_NUMBER_WORDS: [&str; 8] = [
    "hundred", "thousand", "million", "billion", "dozen", "half", "few", "several",
];

/// A text's words, lower-cased, split at everything but letters and digits ("6-week" is "6"
/// and "week").
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|token| !token.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `text` states a number, an amount or a date that `question` does not already
/// hold: a number ("8", "1:1", "$200"), a number word ("four weeks", "twice a week", "a few
/// hours", "half"), or a month or weekday name. Words the question holds are left out: in
/// "How often must I answer the daily question?", "the daily question …" echoes the question
/// and "… at least twice a week" answers it.
pub(crate) fn states_number(text: &str, question: &str) -> bool {
    let asked = tokens(question);
    tokens(text).iter().any(|token| {
        let word = token.as_str();
        !asked.contains(token)
            && (token.chars().any(|c| c.is_ascii_digit())
                || MORE_NUMBER_WORDS.contains(&word)
                || FREQUENCY_WORDS.contains(&word)
                || MONTHS_AND_DAYS.contains(&word)
                || crate::verify::is_number_word(word))
    })
}

/// Units of length and size: "How long may the synopsis be?" asks for a length, not a time
/// ("80 characters").
const LENGTH_UNITS: [&str; 16] = [
    "characters",
    "words",
    "lines",
    "pages",
    "bytes",
    "kb",
    "mb",
    "gb",
    "meters",
    "metres",
    "km",
    "miles",
    "feet",
    "inches",
    "cm",
    "mm",
];

/// Words that make a number an amount of money or a share.
const CURRENCY_WORDS: [&str; 9] = [
    "percent", "dollar", "dollars", "usd", "eur", "euro", "euros", "gbp", "cents",
];

/// Whether `text` states the kind of quantity `kind` that `question` asks for. Numbers and
/// frequency words the question already holds do not count ([`states_number`]): in "How often
/// must I answer the daily question?", "the daily question" echoes it.
pub(crate) fn states(text: &str, question: &str, kind: Quantity) -> bool {
    let tokens = tokens(text);
    let has = |list: &[&str]| tokens.iter().any(|token| list.contains(&token.as_str()));
    // "a week", "every month", "per year": a unit of time without a digit.
    let unit_after = |openers: &[&str]| {
        tokens.windows(2).any(|pair| {
            openers.contains(&pair[0].as_str()) && TIME_UNITS.contains(&pair[1].as_str())
        })
    };
    let number = || states_number(text, question);
    match kind {
        Quantity::Amount => {
            number() && (text.contains(['$', '€', '£', '¥', '%']) || has(&CURRENCY_WORDS))
        }
        Quantity::Duration => {
            (number() && (has(&TIME_UNITS) || has(&LENGTH_UNITS)))
                || unit_after(&["a", "an", "one"])
        }
        Quantity::Frequency => {
            // The question's first word is a question word or a conjunction ("Once I've been
            // here a year, how often …"): a sentence may use it in its answer.
            let asked: Vec<String> = words(question).into_iter().skip(1).collect();
            tokens
                .iter()
                .any(|token| FREQUENCY_WORDS.contains(&token.as_str()) && !asked.contains(token))
                || unit_after(&["every", "each", "per"])
                || (number() && has(&["times", "every"]))
        }
        Quantity::Date => {
            has(&MONTHS_AND_DAYS)
                || has(&["noon", "am", "pm"])
                // A time of day: "9:30".
                || text.as_bytes().windows(3).any(|w| {
                    w[0].is_ascii_digit() && w[1] == b':' && w[2].is_ascii_digit()
                })
                || tokens.iter().any(|token| {
                    // A year, or a day of the month ("1st", "15th").
                    let digits = token.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                    let suffix = &token[digits.len()..];
                    !digits.is_empty()
                        && digits.chars().all(|c| c.is_ascii_digit())
                        && ((digits.len() == 4 && suffix.is_empty())
                            || matches!(suffix, "st" | "nd" | "rd" | "th" | "am" | "pm"))
                })
        }
        Quantity::Count => number(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_name_the_kind_of_quantity_they_ask_for() {
        for (question, kind) in [
            (
                "How long is the break between work cycles?",
                Some(Quantity::Duration),
            ),
            ("How many vacation days do I get?", Some(Quantity::Duration)),
            ("How many people are on a team?", Some(Quantity::Count)),
            (
                "How many days of vacation do I get?",
                Some(Quantity::Duration),
            ),
            (
                "How much notice do I need to give?",
                Some(Quantity::Duration),
            ),
            (
                "How much will the company reimburse for a phone?",
                Some(Quantity::Amount),
            ),
            (
                "How much is deducted each pay period for family coverage?",
                Some(Quantity::Amount),
            ),
            (
                "What's the annual deductible on the medical plan?",
                Some(Quantity::Amount),
            ),
            (
                "What share of the premium do I pay?",
                Some(Quantity::Amount),
            ),
            (
                "How often do formal reviews happen?",
                Some(Quantity::Frequency),
            ),
            ("On what date do raises take effect?", Some(Quantity::Date)),
            ("How many jurors must agree?", Some(Quantity::Count)),
            ("When do you need to blind bake pastry?", None),
            ("Who approves the budget?", None),
            ("What is the role of the prime minister?", None),
            ("What is the literacy rate in India?", None),
        ] {
            assert_eq!(asked(question), kind, "{question}");
        }
    }

    #[test]
    fn sentences_state_the_kind_asked_for() {
        use Quantity::{Amount, Date, Duration, Frequency};
        let cycles = "How long is the break between work cycles?";
        let budget = "What's the dollar budget per person for a mini meet-up?";
        let reviews = "Once I've been here a year, how often do reviews happen?";
        let daily = "How often must I answer the daily question?";
        let raises = "On what date do raises take effect?";
        for (question, kind, sentence, stated) in [
            (
                cycles,
                Duration,
                "In between, we spend two weeks cooling down.",
                true,
            ),
            (
                cycles,
                Duration,
                "We work in 6-week or 8-week cycles.",
                true,
            ),
            (cycles, Duration, "There are typically six cycles.", false),
            (
                budget,
                Amount,
                "Limit yourself to 1 mini meet-up per year.",
                false,
            ),
            (budget, Amount, "The budget is $500 per person.", true),
            (budget, Amount, "The company pays 75% of the premium.", true),
            (reviews, Frequency, "Then you'll meet once a year.", true),
            (
                reviews,
                Frequency,
                "You'll meet with your manager for reviews.",
                false,
            ),
            (
                daily,
                Frequency,
                "First, there's the daily question.",
                false,
            ),
            (daily, Frequency, "Answer it at least twice a week.", true),
            (raises, Date, "We increase pay on January 1st.", true),
            (raises, Date, "It opened in 1998.", true),
            (
                raises,
                Date,
                "Raises follow the top 10% of the market.",
                false,
            ),
        ] {
            assert_eq!(
                states(sentence, question, kind),
                stated,
                "{question} / {sentence}"
            );
        }
    }
}

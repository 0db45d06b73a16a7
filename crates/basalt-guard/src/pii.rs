//! Sensitive-information detectors: structured personal data (emails, phone numbers, payment
//! cards, IBANs, US social security numbers, IP addresses, URLs) and secrets (AWS access keys,
//! credentials in URLs, high-entropy tokens), plus the custom patterns of a configuration.
//!
//! Each detector is a regular expression that proposes candidates and, where the format has
//! one, a check that confirms them: the Luhn digit of a card, the mod-97 checksum of an IBAN, the
//! reserved ranges of an SSN, a parse of an IP address. Overlapping findings are resolved by
//! priority (a Luhn-valid card is not also a phone number), then by length.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a finding is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntityType {
    Email,
    Phone,
    CreditCard,
    Iban,
    UsSsn,
    IpAddress,
    Url,
    AwsAccessKey,
    UrlCredentials,
    Secret,
    /// A configuration's own pattern, by its name.
    #[serde(untagged)]
    Custom(String),
}

impl EntityType {
    /// The built-in types, in the order configurations list them.
    pub const BUILT_IN: [EntityType; 10] = [
        EntityType::Email,
        EntityType::Phone,
        EntityType::CreditCard,
        EntityType::Iban,
        EntityType::UsSsn,
        EntityType::IpAddress,
        EntityType::Url,
        EntityType::AwsAccessKey,
        EntityType::UrlCredentials,
        EntityType::Secret,
    ];

    /// The name used in configurations and placeholders (`EMAIL` → `{EMAIL}`).
    pub fn name(&self) -> &str {
        match self {
            EntityType::Email => "EMAIL",
            EntityType::Phone => "PHONE",
            EntityType::CreditCard => "CREDIT_CARD",
            EntityType::Iban => "IBAN",
            EntityType::UsSsn => "US_SSN",
            EntityType::IpAddress => "IP_ADDRESS",
            EntityType::Url => "URL",
            EntityType::AwsAccessKey => "AWS_ACCESS_KEY",
            EntityType::UrlCredentials => "URL_CREDENTIALS",
            EntityType::Secret => "SECRET",
            EntityType::Custom(name) => name,
        }
    }

    /// The built-in type with this name, if any.
    pub fn built_in(name: &str) -> Option<EntityType> {
        EntityType::BUILT_IN
            .into_iter()
            .find(|entity| entity.name() == name)
    }

    /// Which finding wins when two overlap: checksummed and specific formats first.
    fn priority(&self) -> u8 {
        match self {
            EntityType::UrlCredentials => 10,
            EntityType::AwsAccessKey => 9,
            EntityType::Custom(_) => 8,
            EntityType::Email => 7,
            EntityType::CreditCard => 6,
            EntityType::Iban => 6,
            EntityType::Url => 5,
            EntityType::UsSsn => 4,
            EntityType::IpAddress => 3,
            EntityType::Phone => 2,
            EntityType::Secret => 1,
        }
    }
}

impl std::fmt::Display for EntityType {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One detected entity: byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(rename = "type")]
    pub entity: EntityType,
    pub start: usize,
    pub end: usize,
}

/// A custom pattern of a configuration.
#[derive(Debug, Clone)]
pub struct CustomPattern {
    pub name: String,
    pub regex: Regex,
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|error| panic!("built-in pattern {pattern}: {error}"))
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)\b[a-z0-9][a-z0-9._%+-]*@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24}\b")
});
static URL_CREDENTIALS: LazyLock<Regex> = LazyLock::new(|| {
    regex(r#"(?i)\b[a-z][a-z0-9+.-]{1,15}://[^\s:/@"'<>]+:[^\s/@"'<>]+@[^\s"'<>]+"#)
});
static URL: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r#"(?i)\b(?:(?:https?|ftp)://|www\.)[a-z0-9-]+(?:\.[a-z0-9-]+)+(?::\d{1,5})?(?:[/?#][^\s"'<>]*)?"#,
    )
});
static CARD: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d(?:[ -]?\d){12,18}\b"));
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"));
static SSN: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(\d{3})([- ])(\d{2})([- ])(\d{4})\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"));
static IPV6: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}"));
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        r"(?:\+\d{1,3}[ .-]?)?",
        r"(?:\(\d{1,4}\) ?\d{2,5}(?:[ .-]\d{2,5}){0,3}|\d{1,5}(?:[ .-]\d{2,8}){1,4}|\d{10,12})",
        r"(?: ?(?:x|ext\.? ?)\d{1,6})?\b",
    ))
});
static AWS_ACCESS_KEY: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}\b")
});
static TOKEN: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Za-z0-9+/_=-]{20,}"));
/// Shapes that are not phone numbers though made of digit groups: dates and dotted quads.
static NOT_PHONE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}\b|\d{1,2}[-./]\d{1,2}[-./]\d{4}\b|\d{1,3}(?:\.\d{1,3}){3}$)",
    )
});

/// Finds sensitive entities in text.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    custom: Vec<CustomPattern>,
}

impl Detector {
    pub fn new(custom: Vec<CustomPattern>) -> Self {
        Detector { custom }
    }

    /// Every entity of `text`, non-overlapping, in order.
    pub fn detect(&self, text: &str) -> Vec<Finding> {
        let mut candidates = Vec::new();
        let mut push = |entity: EntityType, start: usize, end: usize| {
            if start < end {
                candidates.push(Finding { entity, start, end });
            }
        };
        for found in URL_CREDENTIALS.find_iter(text) {
            let end = found.start() + trim_trailing_punctuation(found.as_str());
            push(EntityType::UrlCredentials, found.start(), end);
        }
        for found in AWS_ACCESS_KEY.find_iter(text) {
            push(EntityType::AwsAccessKey, found.start(), found.end());
        }
        for pattern in &self.custom {
            for found in pattern.regex.find_iter(text) {
                push(
                    EntityType::Custom(pattern.name.clone()),
                    found.start(),
                    found.end(),
                );
            }
        }
        for found in EMAIL.find_iter(text) {
            push(EntityType::Email, found.start(), found.end());
        }
        for (start, end) in scan(&CARD, text, |candidate, _| is_card_number(candidate)) {
            push(EntityType::CreditCard, start, end);
        }
        for (start, end) in scan(&IBAN, text, |candidate, _| is_iban(candidate)) {
            push(EntityType::Iban, start, end);
        }
        for found in URL.find_iter(text) {
            let end = found.start() + trim_trailing_punctuation(found.as_str());
            push(EntityType::Url, found.start(), end);
        }
        for captures in SSN.captures_iter(text) {
            let whole = captures.get(0).expect("group 0");
            let part = |index: usize| captures.get(index).map_or("", |m| m.as_str());
            let spaced = part(2) == " ";
            if part(2) == part(4)
                && is_ssn(part(1), part(3), part(5))
                && !(spaced && is_house_number(text, whole.start(), whole.end()))
            {
                push(EntityType::UsSsn, whole.start(), whole.end());
            }
        }
        for found in IPV4.find_iter(text) {
            if found.as_str().parse::<Ipv4Addr>().is_ok() && !inside_version(text, found.start()) {
                push(EntityType::IpAddress, found.start(), found.end());
            }
        }
        for found in IPV6.find_iter(text) {
            let candidate = found.as_str();
            if candidate.matches(':').count() >= 2
                && candidate.chars().filter(char::is_ascii_hexdigit).count() >= 4
                && candidate.parse::<Ipv6Addr>().is_ok()
            {
                push(EntityType::IpAddress, found.start(), found.end());
            }
        }
        for found in PHONE.find_iter(text) {
            if is_phone(text, found.start(), found.as_str()) {
                push(EntityType::Phone, found.start(), found.end());
            }
        }
        for found in TOKEN.find_iter(text) {
            if is_secret(found.as_str()) {
                push(EntityType::Secret, found.start(), found.end());
            }
        }
        resolve_overlaps(candidates)
    }
}

/// The spans of `text` that `pattern` proposes and the checksum `valid` confirms. A match that
/// fails is not dropped whole: its shorter prefixes (cut at a space, `-` or `.`) are tried, then
/// the search resumes at its next group. Without this, a greedy match that starts on another
/// number ("ref 12 4716424521511864", "call 645-9740 4716 4245 2151 1864") would hide the card.
fn scan(pattern: &Regex, text: &str, valid: impl Fn(&str, usize) -> bool) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let Some(matched) = pattern.find_at(text, at) else {
            break;
        };
        let start = matched.start();
        let mut end = matched.end();
        let accepted = loop {
            let candidate = &text[start..end];
            if valid(candidate, start) {
                break Some(end);
            }
            match candidate
                .trim_end_matches([' ', '-', '.'])
                .rfind([' ', '-', '.'])
            {
                Some(cut) if cut > 0 => end = start + cut,
                _ => break None,
            }
        };
        if let Some(end) = accepted {
            found.push((start, end));
            at = end;
        } else {
            // Resume after the first separator of the rejected match (its next group).
            at = matched
                .as_str()
                .find([' ', '-', '.'])
                .map_or(matched.end(), |cut| start + cut + 1)
                .max(start + 1);
            while !text.is_char_boundary(at) {
                at += 1;
            }
        }
    }
    found
}

/// Keeps the best of overlapping findings: higher priority, then longer, then earlier.
fn resolve_overlaps(mut candidates: Vec<Finding>) -> Vec<Finding> {
    candidates.sort_by(|left, right| {
        right
            .entity
            .priority()
            .cmp(&left.entity.priority())
            .then((right.end - right.start).cmp(&(left.end - left.start)))
            .then(left.start.cmp(&right.start))
    });
    let mut kept: Vec<Finding> = Vec::new();
    for candidate in candidates {
        if kept
            .iter()
            .all(|other| candidate.end <= other.start || candidate.start >= other.end)
        {
            kept.push(candidate);
        }
    }
    kept.sort_by_key(|finding| finding.start);
    kept
}

/// Length of `text` without trailing sentence punctuation (a URL at the end of a sentence).
fn trim_trailing_punctuation(text: &str) -> usize {
    text.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '}', '\'', '"'])
        .len()
}

/// A 13–19 digit number (spaces or dashes allowed) of a card network, with a valid Luhn digit.
pub fn is_card_number(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || !matches!(digits[0], 2..=6) {
        return false;
    }
    if digits.iter().all(|&digit| digit == digits[0]) {
        return false;
    }
    luhn(&digits)
}

/// The Luhn check: doubling every second digit from the right, the sum is a multiple of 10.
pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, &digit)| {
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An IBAN: country code, check digits, 11–30 more characters, and the ISO 13616 mod-97 check.
pub fn is_iban(candidate: &str) -> bool {
    let compact: String = candidate
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for character in tail.chars().chain(head.chars()) {
        let value = match character.to_digit(36) {
            Some(value) => value,
            None => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// A US SSN outside the never-issued ranges (area 000, 666, 900–999; group 00; serial 0000).
fn is_ssn(area: &str, group: &str, serial: &str) -> bool {
    let area: u32 = area.parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && group != "00" && serial != "0000"
}

/// An address that is part of a version string ("v1.2.3.4", "version 10.0.0.1" stays an IP).
fn inside_version(text: &str, start: usize) -> bool {
    text[..start].ends_with(['v', 'V'])
}

/// A phone number candidate: 6 to 15 digits, not a date or a dotted quad, not part of a longer
/// token, and not a bare run of digits unless it is 10–12 long.
fn is_phone(text: &str, start: usize, candidate: &str) -> bool {
    let number = candidate
        .split(['x', 'e'])
        .next()
        .unwrap_or(candidate)
        .trim_end();
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if !(6..=15).contains(&digits) || NOT_PHONE.is_match(number) {
        return false;
    }
    // A time follows ("… 14:56:41"): the digits before it are a date.
    if text[start + candidate.len()..].starts_with(':') {
        return false;
    }
    // Part of a longer token ("v1.2-3", "A12 345"): not a phone number.
    let before = text[..start].chars().next_back();
    if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '.' | '/' | '-' | '_')) {
        return false;
    }
    // A house number is short: at most three groups and eight digits ("01 4589", "722 20 40").
    let groups = number
        .split(|c: char| !c.is_ascii_digit())
        .filter(|group| !group.is_empty())
        .count();
    let plain = !candidate.starts_with(['+', '(']) && !candidate.contains(['x', 'e']);
    if plain && groups <= 3 && digits <= 8 && is_house_number(text, start, start + candidate.len())
    {
        return false;
    }
    // A single run of digits is a phone number only when it is 10–12 long.
    groups > 1 || (10..=12).contains(&digits)
}

/// Words that name a street: digits right before one are a house number, not a phone.
const STREET_WORDS: &[&str] = &[
    "street",
    "st",
    "road",
    "rd",
    "lane",
    "ln",
    "avenue",
    "ave",
    "av",
    "drive",
    "dr",
    "parkway",
    "pkwy",
    "way",
    "court",
    "ct",
    "boulevard",
    "blvd",
    "place",
    "pl",
    "square",
    "sq",
    "terrace",
    "highway",
    "hwy",
    "circle",
    "rue",
    "via",
    "strasse",
    "straße",
    "weg",
    "calle",
    "plaza",
];

/// Whether the digits at `start..end` are (part of) a street address: right after "Apt." or
/// "Suite", or followed within a few words on the same line by a street word ("01 4589 40th
/// Street", "Apt. 722 20 40 rue Victor Hugo").
fn is_house_number(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].trim_end().to_lowercase();
    if ["apt.", "apt", "suite", "unit", "no."]
        .iter()
        .any(|word| before.ends_with(word))
    {
        return true;
    }
    let line = text[end..].split(['\n', ',']).next().unwrap_or_default();
    line.split_whitespace()
        .take(5)
        .map(|word| word.trim_end_matches('.').to_lowercase())
        .any(|word| STREET_WORDS.contains(&word.as_str()))
        || line.split_whitespace().next().is_some_and(|word| {
            // "40th Street": an ordinal street number.
            let lower = word.to_lowercase();
            lower.len() > 2
                && lower.chars().next().is_some_and(|c| c.is_ascii_digit())
                && ["st", "nd", "rd", "th"]
                    .iter()
                    .any(|suffix| lower.ends_with(suffix))
        })
}

/// A token that looks random enough to be a key: at least 20 characters with a digit and
/// letters of at least one case besides (so not a word, a path or a plain number), and an
/// entropy close to that of random text of its length (at least 85% of the most its length
/// allows, and 4 bits per character from 27 characters on).
fn is_secret(token: &str) -> bool {
    let has = |test: fn(&char) -> bool| token.chars().any(|c| test(&c));
    let classes = [
        has(char::is_ascii_uppercase),
        has(char::is_ascii_lowercase),
        has(char::is_ascii_digit),
    ];
    if !classes[2] || classes.iter().filter(|&&present| present).count() < 2 {
        return false;
    }
    let length = token.chars().count() as f64;
    entropy(token) >= (0.85 * length.log2()).min(4.0)
}

/// Shannon entropy of the characters of `text`, in bits per character.
pub fn entropy(text: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut total = 0usize;
    for character in text.chars() {
        *counts.entry(character).or_insert(0usize) += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&count| {
            let p = count as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(String, &str)> {
        Detector::default()
            .detect(text)
            .into_iter()
            .map(|finding| {
                (
                    finding.entity.name().to_owned(),
                    &text[finding.start..finding.end],
                )
            })
            .collect()
    }

    fn kinds(text: &str) -> Vec<String> {
        found(text).into_iter().map(|(kind, _)| kind).collect()
    }

    #[test]
    fn structured_entities_are_found_with_their_checks() {
        assert_eq!(
            found("Mail PeterFriedman@cuvox.de, card 4716424521511864."),
            [
                ("EMAIL".to_owned(), "PeterFriedman@cuvox.de"),
                ("CREDIT_CARD".to_owned(), "4716424521511864")
            ]
        );
        // One digit changed: the Luhn check fails, and 16 digits in one run are no phone.
        assert!(kinds("card 4716424521511865").is_empty());
        assert_eq!(kinds("IBAN GB69PMNJ18913943430745 please"), ["IBAN"]);
        assert!(!kinds("IBAN GB69PMNJ18913943430746 please").contains(&"IBAN".to_owned()));
        assert_eq!(kinds("ssn 308-63-0237"), ["US_SSN"]);
        assert!(kinds("ssn 666-63-0237").iter().all(|kind| kind != "US_SSN"));
        assert_eq!(kinds("from 86.231.85.193 today"), ["IP_ADDRESS"]);
        assert!(kinds("from 300.231.85.193 today").is_empty());
        assert_eq!(
            kinds("host d80:e4b5:79da:6cf6:71f3:51f7:9161:c319"),
            ["IP_ADDRESS"]
        );
        assert_eq!(kinds("host fe80::1ff:fe23:4567:890a"), ["IP_ADDRESS"]);
        assert!(kinds("at 14:56:41 sharp").is_empty());
        assert_eq!(
            found("see http://www.visualtrips.hu/."),
            [("URL".to_owned(), "http://www.visualtrips.hu/")]
        );
    }

    #[test]
    fn phone_numbers_in_many_formats_but_not_dates() {
        for phone in [
            "(88) 684-334",
            "06-10446904",
            "001-748-088-2851x818",
            "089 72 63 41",
            "(978)645-9740x11144",
            "833.719.3994x1887",
            "+1-743-438-6774x62406",
            "2813882583",
            "785 8949",
        ] {
            let text = format!("call {phone} now");
            assert_eq!(found(&text), [("PHONE".to_owned(), phone)], "{phone}");
        }
        for not_phone in [
            "on 1993-01-04 14:56:41",
            "born 3/23/1940",
            "in 2001 and 2002",
            "v1.2.3",
        ] {
            assert!(
                kinds(not_phone).is_empty(),
                "{not_phone}: {:?}",
                found(not_phone)
            );
        }
    }

    #[test]
    fn a_card_after_another_number_is_found() {
        assert_eq!(
            found("ref 12 4716424521511864"),
            [("CREDIT_CARD".to_owned(), "4716424521511864")]
        );
    }

    #[test]
    fn secrets_are_found() {
        assert_eq!(
            kinds("key AKIAIOSFODNN7EXAMPLE in the config"),
            ["AWS_ACCESS_KEY"]
        );
        assert_eq!(
            found("db postgres://admin:s3cr3t@db.internal:5432/app."),
            [(
                "URL_CREDENTIALS".to_owned(),
                "postgres://admin:s3cr3t@db.internal:5432/app"
            )]
        );
        assert_eq!(
            kinds("token wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY end"),
            ["SECRET"]
        );
        assert!(kinds("the word internationalization is long").is_empty());
        assert!(kinds("see crates/basalt-guard/src/pii.rs").is_empty());
    }

    #[test]
    fn custom_patterns_win_over_built_in_ones() {
        let detector = Detector::new(vec![CustomPattern {
            name: "EMPLOYEE_ID".into(),
            regex: Regex::new(r"EMP-\d{6}").expect("regex"),
        }]);
        let text = "badge EMP-123456 issued";
        let findings = detector.detect(text);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].entity.name(), "EMPLOYEE_ID");
        assert_eq!(&text[findings[0].start..findings[0].end], "EMP-123456");
    }

    #[test]
    fn luhn_and_mod97() {
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
        assert!(is_iban("DE89 3704 0044 0532 0130 00"));
        assert!(!is_iban("DE89 3704 0044 0532 0130 01"));
    }
}

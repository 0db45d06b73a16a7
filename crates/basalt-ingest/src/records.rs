//! Record files: every CSV row, JSON array element or JSON Lines line is a document of its own.
//! A record's id comes from `_id` or `id`, its title from `title`, its text from `text`,
//! `content`, `body` or `abstract` (or, when there is none, from all its fields as
//! `name: value` lines); the other scalar fields become filterable metadata. A BEIR
//! `corpus.jsonl` therefore ingests as is, keeping `_id`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::ExtractedRecord;
use crate::document::{ExtractedDocument, Section};
use crate::error::ExtractError;

const ID_FIELDS: &[&str] = &["_id", "id"];
const TITLE_FIELDS: &[&str] = &["title"];
const TEXT_FIELDS: &[&str] = &["text", "content", "body", "abstract"];

fn find<'a>(object: &'a Map<String, Value>, names: &[&str]) -> Option<(&'a String, &'a Value)> {
    names.iter().find_map(|name| {
        object
            .iter()
            .find(|(key, value)| key.eq_ignore_ascii_case(name) && !value.is_null())
    })
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Metadata keeps scalars and arrays of scalars.
fn metadata_value(value: &Value) -> Option<Value> {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(value.clone()),
        Value::Array(items)
            if items.iter().all(|item| scalar_text(item).is_some()) && !items.is_empty() =>
        {
            Some(value.clone())
        }
        _ => None,
    }
}

/// One JSON object as a record; `None` when it holds no text at all.
fn object_record(object: &Map<String, Value>, locator: String) -> Option<ExtractedRecord> {
    let id = find(object, ID_FIELDS).and_then(|(_, value)| scalar_text(value));
    let title = find(object, TITLE_FIELDS)
        .and_then(|(_, value)| scalar_text(value))
        .map(|title| title.trim().to_string())
        .filter(|title| !title.is_empty());
    let text_field = find(object, TEXT_FIELDS);
    let used: Vec<&str> = [
        find(object, ID_FIELDS),
        find(object, TITLE_FIELDS),
        text_field,
    ]
    .into_iter()
    .flatten()
    .map(|(key, _)| key.as_str())
    .collect();
    let mut metadata = BTreeMap::new();
    for (key, value) in object {
        if used.contains(&key.as_str()) {
            continue;
        }
        if key == "metadata"
            && let Value::Object(inner) = value
        {
            for (key, value) in inner {
                if let Some(value) = metadata_value(value) {
                    metadata.insert(key.clone(), value);
                }
            }
        } else if let Some(value) = metadata_value(value) {
            metadata.insert(key.clone(), value);
        }
    }
    let text = match text_field {
        Some((_, value)) => scalar_text(value).unwrap_or_else(|| value.to_string()),
        None => object
            .iter()
            .filter(|(key, _)| !used.contains(&key.as_str()))
            .filter_map(|(key, value)| {
                let value = scalar_text(value).unwrap_or_else(|| value.to_string());
                (!value.trim().is_empty()).then(|| format!("{key}: {value}"))
            })
            .collect::<Vec<_>>()
            .join("\n"),
    };
    if text.trim().is_empty() && title.is_none() {
        return None;
    }
    let length = text.len();
    Some(ExtractedRecord {
        id,
        locator: Some(locator),
        document: ExtractedDocument {
            text,
            title,
            sections: vec![Section::new(0..length)],
        },
        metadata,
    })
}

fn json_error(message: String) -> ExtractError {
    ExtractError::Corrupt {
        format: "JSON",
        message,
    }
}

/// A JSON file: an array of objects (one record each) or a single object.
pub fn extract_json(source: &str) -> Result<Vec<ExtractedRecord>, ExtractError> {
    let value: Value =
        serde_json::from_str(source).map_err(|error| json_error(error.to_string()))?;
    match value {
        Value::Array(items) => {
            let mut records = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let Value::Object(object) = item else {
                    return Err(json_error(format!("item {index} is not an object")));
                };
                records.extend(object_record(object, format!("item {index}")));
            }
            Ok(records)
        }
        Value::Object(object) => Ok(object_record(&object, "object".into())
            .into_iter()
            .collect()),
        _ => Err(json_error(
            "expected an object or an array of objects".into(),
        )),
    }
}

/// JSON Lines: one object per non-blank line.
pub fn extract_jsonl(source: &str) -> Result<Vec<ExtractedRecord>, ExtractError> {
    let mut records = Vec::new();
    for (index, line) in source.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|error| json_error(format!("line {}: {error}", index + 1)))?;
        let Value::Object(object) = value else {
            return Err(json_error(format!("line {} is not an object", index + 1)));
        };
        records.extend(object_record(&object, format!("line {}", index + 1)));
    }
    Ok(records)
}

/// CSV with a header row; numeric cells become numbers in metadata.
pub fn extract_csv(bytes: &[u8]) -> Result<Vec<ExtractedRecord>, ExtractError> {
    let csv_error = |message: String| ExtractError::Corrupt {
        format: "CSV",
        message,
    };
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|error| csv_error(error.to_string()))?
        .iter()
        .map(|header| header.trim().to_string())
        .collect();
    let mut records = Vec::new();
    for (index, row) in reader.records().enumerate() {
        let row = row.map_err(|error| csv_error(format!("row {}: {error}", index + 1)))?;
        let mut object = Map::new();
        for (column, cell) in row.iter().enumerate() {
            let key = headers
                .get(column)
                .filter(|header| !header.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("column{}", column + 1));
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            let value = match cell.parse::<i64>() {
                Ok(number) => Value::from(number),
                Err(_) => match cell.parse::<f64>() {
                    Ok(number) if number.is_finite() => Value::from(number),
                    _ => Value::String(cell.to_string()),
                },
            };
            object.insert(key, value);
        }
        records.extend(object_record(&object, format!("row {}", index + 1)));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beir_lines_keep_their_id_title_and_text() {
        let records = extract_jsonl(
            "{\"_id\": \"4983\", \"title\": \"White matter\", \"text\": \"Alterations of the architecture.\", \"metadata\": {\"year\": 2002}}\n\n",
        )
        .expect("parses");
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.id.as_deref(), Some("4983"));
        assert_eq!(record.document.title.as_deref(), Some("White matter"));
        assert_eq!(record.document.text, "Alterations of the architecture.");
        assert_eq!(record.metadata.get("year"), Some(&Value::from(2002)));
        assert_eq!(record.locator.as_deref(), Some("line 1"));
    }

    #[test]
    fn csv_rows_without_a_text_column_render_their_fields() {
        let records =
            extract_csv(b"id,name,price,in stock\n7,Drill,19.5,yes\n8,,,\n").expect("parses");
        assert_eq!(
            records.len(),
            1,
            "a row with only an id has nothing to index"
        );
        assert_eq!(records[0].id.as_deref(), Some("7"));
        assert_eq!(
            records[0].document.text,
            "in stock: yes\nname: Drill\nprice: 19.5"
        );
        assert_eq!(records[0].metadata.get("price"), Some(&Value::from(19.5)));
    }

    #[test]
    fn bad_json_names_the_line() {
        let error = extract_jsonl("{\"text\": \"ok\"}\n{broken\n").expect_err("line 2 is bad");
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(extract_json("[1, 2]").is_err());
        assert_eq!(
            extract_json("{\"body\": \"one\"}").expect("object").len(),
            1
        );
    }
}

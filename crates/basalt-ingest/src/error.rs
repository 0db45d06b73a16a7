/// Why a file yielded no document. Each message names the problem and what to do about it; the
/// caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the file is empty (no text to index)")]
    Empty,
    #[error(
        "looks like a binary file, not text (a NUL byte at offset {offset}); rename it or leave it out"
    )]
    Binary { offset: usize },
    #[error(
        "not valid UTF-8 (first bad byte at offset {offset}); convert it with `iconv -t UTF-8`"
    )]
    InvalidUtf8 { offset: usize },
    #[error("the PDF has no extractable text (scanned images?); run OCR on it first")]
    NoTextInPdf,
    #[error(
        "the document is encrypted or password-protected; remove the protection and ingest it again"
    )]
    Encrypted,
    #[error("damaged or unsupported {format} file: {message}")]
    Corrupt {
        format: &'static str,
        message: String,
    },
    #[error("{format} content expands to more than {limit} bytes (a zip bomb?); refusing it")]
    TooLarge { format: &'static str, limit: u64 },
    #[error("the {format} parser crashed on this file ({message}); please report it")]
    ParserPanic {
        format: &'static str,
        message: String,
    },
}

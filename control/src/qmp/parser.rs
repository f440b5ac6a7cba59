//! QMP input parsing: a token batch from the lexer to a JSON value, with
//! QEMU's `qobject/json-parser.c` grammar and error messages.
//!
//! QEMU accepts two extensions clients may rely on: single-quoted strings
//! and the `\'` escape. It rejects duplicate object keys and invalid
//! Unicode (including noncharacters). Error descriptions are copied
//! verbatim ("JSON parse error, expecting value", ...); only the first
//! error is reported, as in QEMU.

use super::lexer::{Message, Token, TokenType};
use serde_json::{Map, Number, Value};

type PResult<T> = Result<T, String>;

fn error(msg: impl std::fmt::Display) -> String {
    format!("JSON parse error, {msg}")
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

/// json_parser_parse(): parses one value from a complete token batch.
pub(crate) fn parse(tokens: &[Token]) -> Message {
    let mut p = Parser { tokens, pos: 0 };
    p.value()
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.pos)
    }

    fn pop(&mut self) -> Option<&'a Token> {
        let t = self.tokens.get(self.pos);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn pop_or_eoi(&mut self) -> PResult<&'a Token> {
        self.pop().ok_or_else(|| error("premature EOI"))
    }

    fn value(&mut self) -> PResult<Value> {
        let token = self.peek().ok_or_else(|| error("premature EOI"))?;
        match token.kind {
            TokenType::LCurly => self.object(),
            TokenType::LSquare => self.array(),
            TokenType::Integer | TokenType::Float | TokenType::String => self.literal(),
            TokenType::Keyword => self.keyword(),
            _ => Err(error("expecting value")),
        }
    }

    fn object(&mut self) -> PResult<Value> {
        self.pop_or_eoi()?; // the '{'
        let mut map = Map::new();
        let peek = self.peek().ok_or_else(|| error("premature EOI"))?;
        if peek.kind == TokenType::RCurly {
            self.pop();
            return Ok(Value::Object(map));
        }
        self.pair(&mut map)?;
        loop {
            let token = self.pop_or_eoi()?;
            match token.kind {
                TokenType::RCurly => return Ok(Value::Object(map)),
                TokenType::Comma => self.pair(&mut map)?,
                _ => return Err(error("expected separator in dict")),
            }
        }
    }

    fn pair(&mut self, map: &mut Map<String, Value>) -> PResult<()> {
        if self.peek().is_none() {
            return Err(error("premature EOI"));
        }
        let key = match self.value()? {
            Value::String(s) => s,
            _ => return Err(error("key is not a string in object")),
        };
        let colon = self.pop_or_eoi()?;
        if colon.kind != TokenType::Colon {
            return Err(error("missing : in object pair"));
        }
        let value = self.value()?;
        if map.contains_key(&key) {
            return Err(error("duplicate key"));
        }
        map.insert(key, value);
        Ok(())
    }

    fn array(&mut self) -> PResult<Value> {
        self.pop_or_eoi()?; // the '['
        let mut list = Vec::new();
        let peek = self.peek().ok_or_else(|| error("premature EOI"))?;
        if peek.kind == TokenType::RSquare {
            self.pop();
            return Ok(Value::Array(list));
        }
        list.push(self.value()?);
        loop {
            let token = self.pop_or_eoi()?;
            match token.kind {
                TokenType::RSquare => return Ok(Value::Array(list)),
                TokenType::Comma => list.push(self.value()?),
                _ => return Err(error("expected separator in list")),
            }
        }
    }

    fn keyword(&mut self) -> PResult<Value> {
        let token = self.pop_or_eoi()?;
        match token.text.as_slice() {
            b"true" => Ok(Value::Bool(true)),
            b"false" => Ok(Value::Bool(false)),
            b"null" => Ok(Value::Null),
            other => Err(error(format_args!(
                "invalid keyword '{}'",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    fn literal(&mut self) -> PResult<Value> {
        let token = self.pop_or_eoi()?;
        // Number tokens are ASCII by construction of the lexer.
        let text = String::from_utf8_lossy(&token.text);
        match token.kind {
            TokenType::String => parse_string(&token.text).map(Value::String),
            TokenType::Integer => {
                // Like QEMU: int64 if it fits, else uint64, else double.
                if let Ok(v) = text.parse::<i64>() {
                    Ok(Value::Number(v.into()))
                } else if let Some(v) = (!text.starts_with('-'))
                    .then(|| text.parse::<u64>().ok())
                    .flatten()
                {
                    Ok(Value::Number(v.into()))
                } else {
                    Ok(float(&text))
                }
            }
            _ => Ok(float(&text)),
        }
    }
}

/// strtod() of a lexer-validated number. JSON (and serde_json) cannot
/// carry infinities, which QEMU would print as `inf`; they become null.
fn float(text: &str) -> Value {
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Four hex digits at `s`, or None (QEMU's cvt4hex() returning -1).
fn cvt4hex(s: &[u8]) -> Option<u32> {
    let digits = s.get(..4)?;
    let mut cp = 0u32;
    for &d in digits {
        cp = (cp << 4) | char::from(d).to_digit(16)?;
    }
    Some(cp)
}

/// QEMU's is_valid_codepoint(): Unicode scalar values minus noncharacters.
fn valid_codepoint(cp: u32) -> Option<char> {
    if (0xFDD0..=0xFDEF).contains(&cp) || (cp & 0xFFFE) == 0xFFFE {
        return None;
    }
    char::from_u32(cp)
}

/// Decodes one (modified) UTF-8 character at the start of `s`; returns it
/// and its length. Modified UTF-8 encodes NUL as C0 80, which QEMU accepts.
fn utf8_char(s: &[u8]) -> Option<(char, usize)> {
    if s.starts_with(&[0xC0, 0x80]) {
        return Some(('\0', 2));
    }
    let len = match s.first()? {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(s.get(..len)?).ok()?.chars().next()?;
    valid_codepoint(u32::from(c)).map(|c| (c, len))
}

/// parse_string(): unquotes and unescapes a string token (either quote).
fn parse_string(tok: &[u8]) -> PResult<String> {
    let quote = tok.first().copied().unwrap_or(b'"');
    let mut out = String::new();
    let mut i = 1;
    while let Some(&b) = tok.get(i) {
        if b == quote {
            break;
        }
        if b != b'\\' {
            let (c, len) =
                utf8_char(&tok[i..]).ok_or_else(|| error("invalid UTF-8 sequence in string"))?;
            out.push(c);
            i += len;
            continue;
        }
        let beg = i;
        let esc = tok.get(i + 1).copied().unwrap_or(0);
        i += 2;
        match esc {
            b'"' => out.push('"'),
            b'\'' => out.push('\''),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let mut cp = cvt4hex(&tok[i.min(tok.len())..]);
                i += 4;
                // A leading surrogate followed by \u must pair with a
                // trailing one; otherwise the whole thing is invalid.
                if let Some(lead @ 0xD800..=0xDBFF) = cp {
                    if tok.get(i) == Some(&b'\\') && tok.get(i + 1) == Some(&b'u') {
                        let trail = tok.get(i + 2..).and_then(cvt4hex);
                        cp = match trail {
                            Some(t @ 0xDC00..=0xDFFF) => {
                                i += 6;
                                Some(0x10000 + ((lead & 0x3FF) << 10) + (t & 0x3FF))
                            }
                            _ => None,
                        };
                    }
                }
                match cp.and_then(valid_codepoint) {
                    Some(c) => out.push(c),
                    None => {
                        let end = i.min(tok.len());
                        let shown = String::from_utf8_lossy(&tok[beg..end]);
                        return Err(error(format_args!(
                            "{shown} is not a valid Unicode character"
                        )));
                    }
                }
            }
            _ => return Err(error("invalid escape sequence in string")),
        }
    }
    Ok(out)
}

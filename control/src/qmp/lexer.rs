//! QMP input framing: QEMU's JSON lexer and "streamer", byte for byte.
//!
//! QMP input is a stream of JSON values with no delimiter between them
//! (not one per line), so framing is done the way QEMU's
//! `qobject/json-lexer.c` and `qobject/json-streamer.c` do it: a lexer turns
//! bytes into tokens, and the streamer collects tokens until curly braces
//! and square brackets balance, then hands the batch to the parser.
//!
//! This is reproduced exactly rather than approximated with `serde_json`
//! because clients depend on its error recovery: a lexical error emits one
//! `JSON parse error, stray '...'` reply and then skips input until a
//! structural character (`{ } [ ] : ,`), a control character or the
//! impossible bytes 0xFE/0xFF. Clients send 0xFF or a control character to
//! force the parser back into a known state (see QEMU's qmp-spec, "Forcing
//! the JSON parser into known-good state").

use super::parser;
use serde_json::Value;

/// Limits from json-streamer.c; they bound memory per message.
const MAX_TOKEN_SIZE: usize = 64 << 20;
const MAX_TOKEN_COUNT: usize = 2 << 20;
const MAX_NESTING: i64 = 1 << 10;

/// Token types the lexer can emit (QEMU's `JSONTokenType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenType {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
}

/// One token with its raw text (bytes: input need not be valid UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenType,
    pub(crate) text: Vec<u8>,
}

/// Lexer states (QEMU's `enum json_lexer_state`, minus interpolation,
/// which QMP never enables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Recovery,
    DqStringEscape,
    DqString,
    SqStringEscape,
    SqString,
    Zero,
    ExpDigits,
    ExpSign,
    ExpE,
    Mantissa,
    MantissaDigits,
    Digits,
    Sign,
    Keyword,
    Start,
}

/// Where a transition goes.
#[derive(Debug, Clone, Copy)]
enum Next {
    State(State),
    Emit(TokenType),
    Error,
}

/// The transition table of json-lexer.c. Returns the target and whether
/// the byte is *not* consumed (QEMU's `LOOKAHEAD` bit: the byte terminated
/// the previous token and is fed again from the start state).
fn transition(state: State, ch: u8) -> (Next, bool) {
    use Next::{Emit, Error};
    use State as S;
    let go = |s: State| (Next::State(s), false);
    let emit = |t: TokenType| (Emit(t), false);
    let terminal = |t: TokenType| (Emit(t), true);
    match state {
        S::Recovery => match ch {
            b'\t' => go(S::Recovery),
            0..=0x1f | 0xfe | 0xff | b'[' | b']' | b'{' | b'}' | b':' | b',' => {
                (Next::State(S::Start), true)
            }
            _ => go(S::Recovery),
        },
        S::DqStringEscape => match ch {
            0x20..=0xfd => go(S::DqString),
            _ => (Error, false),
        },
        S::DqString => match ch {
            b'\\' => go(S::DqStringEscape),
            b'"' => emit(TokenType::String),
            0x20..=0xfd => go(S::DqString),
            _ => (Error, false),
        },
        S::SqStringEscape => match ch {
            0x20..=0xfd => go(S::SqString),
            _ => (Error, false),
        },
        S::SqString => match ch {
            b'\\' => go(S::SqStringEscape),
            b'\'' => emit(TokenType::String),
            0x20..=0xfd => go(S::SqString),
            _ => (Error, false),
        },
        S::Zero => match ch {
            b'0'..=b'9' => (Error, false),
            b'.' => go(S::Mantissa),
            _ => terminal(TokenType::Integer),
        },
        S::ExpDigits => match ch {
            b'0'..=b'9' => go(S::ExpDigits),
            _ => terminal(TokenType::Float),
        },
        S::ExpSign => match ch {
            b'0'..=b'9' => go(S::ExpDigits),
            _ => (Error, false),
        },
        S::ExpE => match ch {
            b'-' | b'+' => go(S::ExpSign),
            b'0'..=b'9' => go(S::ExpDigits),
            _ => (Error, false),
        },
        S::MantissaDigits => match ch {
            b'0'..=b'9' => go(S::MantissaDigits),
            b'e' | b'E' => go(S::ExpE),
            _ => terminal(TokenType::Float),
        },
        S::Mantissa => match ch {
            b'0'..=b'9' => go(S::MantissaDigits),
            _ => (Error, false),
        },
        S::Digits => match ch {
            b'0'..=b'9' => go(S::Digits),
            b'e' | b'E' => go(S::ExpE),
            b'.' => go(S::Mantissa),
            _ => terminal(TokenType::Integer),
        },
        S::Sign => match ch {
            b'0' => go(S::Zero),
            b'1'..=b'9' => go(S::Digits),
            _ => (Error, false),
        },
        S::Keyword => match ch {
            b'a'..=b'z' => go(S::Keyword),
            _ => terminal(TokenType::Keyword),
        },
        S::Start => match ch {
            b'"' => go(S::DqString),
            b'\'' => go(S::SqString),
            b'0' => go(S::Zero),
            b'1'..=b'9' => go(S::Digits),
            b'-' => go(S::Sign),
            b'{' => emit(TokenType::LCurly),
            b'}' => emit(TokenType::RCurly),
            b'[' => emit(TokenType::LSquare),
            b']' => emit(TokenType::RSquare),
            b',' => emit(TokenType::Comma),
            b':' => emit(TokenType::Colon),
            b'a'..=b'z' => go(S::Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => go(S::Start),
            _ => (Error, false),
        },
    }
}

/// One framed input message: a parsed JSON value, or the description of
/// a JSON error (already prefixed the way QEMU words it).
pub(crate) type Message = Result<Value, String>;

/// Incremental QMP input decoder: feed bytes, get complete messages.
#[derive(Debug)]
pub(crate) struct JsonStream {
    state: State,
    token: Vec<u8>,
    tokens: Vec<Token>,
    token_size: usize,
    brace_count: i64,
    bracket_count: i64,
}

impl Default for JsonStream {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonStream {
    pub(crate) fn new() -> Self {
        JsonStream {
            state: State::Start,
            token: Vec::new(),
            tokens: Vec::new(),
            token_size: 0,
            brace_count: 0,
            bracket_count: 0,
        }
    }

    /// End of input (`json_message_parser_flush`): an unfinished value is
    /// parsed as it stands, which reports QEMU's "premature EOI".
    pub(crate) fn finish(&mut self, out: &mut Vec<Message>) {
        if !self.tokens.is_empty() || !self.token.is_empty() {
            let tokens = std::mem::take(&mut self.tokens);
            self.token.clear();
            out.push(parser::parse(&tokens));
        }
        self.state = State::Start;
    }

    /// Feeds raw input bytes; appends every message they complete to `out`.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut Vec<Message>) {
        for &ch in bytes {
            self.feed_byte(ch, out);
        }
    }

    /// json_lexer_feed_char(): a byte that ends a token by lookahead is
    /// re-fed from the start state, hence the loop.
    fn feed_byte(&mut self, ch: u8, out: &mut Vec<Message>) {
        loop {
            let (next, lookahead) = transition(self.state, ch);
            if !lookahead {
                self.token.push(ch);
            }
            match next {
                Next::Emit(kind) => {
                    let text = std::mem::take(&mut self.token);
                    self.process_token(Some(kind), text, out);
                    self.state = State::Start;
                }
                Next::State(State::Start) => {
                    self.token.clear();
                    self.state = State::Start;
                }
                Next::State(State::Recovery) => {
                    self.token.clear();
                    self.state = State::Recovery;
                }
                Next::Error => {
                    let text = std::mem::take(&mut self.token);
                    self.process_token(None, text, out);
                    self.state = State::Recovery;
                }
                Next::State(s) => self.state = s,
            }
            if !lookahead {
                break;
            }
        }
        // A single token (a long string) must not grow without bound.
        // QEMU passes the partial token on; we report the streamer's limit
        // error instead, which is where such input ends up anyway.
        if self.token.len() > MAX_TOKEN_SIZE {
            self.token.clear();
            self.state = State::Start;
            self.emit(Err("JSON token size limit exceeded".into()), out);
        }
    }

    /// json_message_process_token(): `kind == None` is a lexical error.
    fn process_token(&mut self, kind: Option<TokenType>, text: Vec<u8>, out: &mut Vec<Message>) {
        let kind = match kind {
            None => {
                // C prints the token as a C string: it stops at a NUL byte.
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                let shown = String::from_utf8_lossy(&text[..end]);
                self.emit(Err(format!("JSON parse error, stray '{shown}'")), out);
                return;
            }
            Some(kind) => kind,
        };
        match kind {
            TokenType::LCurly => self.brace_count += 1,
            TokenType::RCurly => self.brace_count -= 1,
            TokenType::LSquare => self.bracket_count += 1,
            TokenType::RSquare => self.bracket_count -= 1,
            _ => {}
        }
        if self.token_size + text.len() + 1 > MAX_TOKEN_SIZE {
            self.emit(Err("JSON token size limit exceeded".into()), out);
            return;
        }
        if self.tokens.len() + 1 > MAX_TOKEN_COUNT {
            self.emit(Err("JSON token count limit exceeded".into()), out);
            return;
        }
        if self.bracket_count + self.brace_count > MAX_NESTING {
            self.emit(Err("JSON nesting depth limit exceeded".into()), out);
            return;
        }
        self.token_size += text.len();
        self.tokens.push(Token { kind, text });
        // Keep collecting while inside an unfinished (and not
        // over-closed) container; otherwise the batch is one message.
        if (self.brace_count > 0 || self.bracket_count > 0)
            && self.brace_count >= 0
            && self.bracket_count >= 0
        {
            return;
        }
        let tokens = std::mem::take(&mut self.tokens);
        let msg = parser::parse(&tokens);
        self.emit(msg, out);
    }

    /// The streamer's `out_emit`: reset and deliver.
    fn emit(&mut self, msg: Message, out: &mut Vec<Message>) {
        self.brace_count = 0;
        self.bracket_count = 0;
        self.tokens.clear();
        self.token_size = 0;
        out.push(msg);
    }
}

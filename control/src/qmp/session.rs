//! Per-connection QMP protocol state: capabilities negotiation and request
//! validation, kept free of I/O so it can be tested directly.
//!
//! This follows QEMU's `monitor/qmp.c`, `monitor/qmp-cmds-control.c` and
//! `qapi/qmp-dispatch.c`: a fresh connection only knows `qmp_capabilities`;
//! anything else gets `CommandNotFound` with QEMU's "Expecting capabilities
//! negotiation" text. Request members are checked in the same order QEMU
//! checks them (its hash order), so a request with several faults gets the
//! same error QSD would give.

use super::error::QmpError;
use super::lexer::Message;
use super::wire::{error_response, qdict_keys, success_response};
use serde_json::{Map, Value};

/// What the connection must do with one input message.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Send this complete response.
    Reply(Value),
    /// Run a command on the control thread, then reply with `id`.
    Forward {
        command: String,
        arguments: Map<String, Value>,
        id: Option<Value>,
    },
}

/// Protocol state of one monitor connection.
#[derive(Debug, Default)]
pub(crate) struct Session {
    negotiated: bool,
    oob: bool,
}

impl Session {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether `qmp_capabilities` has succeeded (events flow only then).
    pub(crate) fn negotiated(&self) -> bool {
        self.negotiated
    }

    /// Handles one framed input message.
    pub(crate) fn handle(&mut self, msg: Message) -> Action {
        let req = match msg {
            Ok(v) => v,
            Err(desc) => return Action::Reply(error_response(&QmpError::generic(desc), None)),
        };
        let Value::Object(dict) = req else {
            let err = QmpError::generic("QMP input must be a JSON object");
            return Action::Reply(error_response(&err, None));
        };
        let id = dict.get("id").cloned();
        let reply_err = |err: QmpError| Action::Reply(error_response(&err, id.as_ref()));

        let (command, oob) = match self.check_obj(&dict) {
            Ok(found) => found,
            Err(err) => return reply_err(err),
        };
        let arguments = match dict.get("arguments") {
            Some(Value::Object(args)) => args.clone(),
            _ => Map::new(),
        };

        if !self.negotiated {
            // Only qmp_capabilities exists before negotiation; QEMU
            // rewrites the CommandNotFound text to say what is expected.
            if command != "qmp_capabilities" {
                return reply_err(QmpError::not_found(
                    "Expecting capabilities negotiation with 'qmp_capabilities'",
                ));
            }
            return match parse_caps_args(&arguments) {
                Ok(oob) => {
                    self.negotiated = true;
                    self.oob = oob;
                    Action::Reply(success_response(Value::Object(Map::new()), id.as_ref()))
                }
                Err(err) => reply_err(err),
            };
        }

        if oob {
            // QEMU looks the command up first; no qemu-storage-daemon
            // command is marked allow-oob, so every one that exists is
            // refused.
            if !crate::commands::exists(&command) {
                return reply_err(QmpError::unknown_command(&command));
            }
            return reply_err(QmpError::generic(format!(
                "The command {command} does not support OOB"
            )));
        }
        if command == "qmp_capabilities" {
            // Arguments are validated before the command body runs.
            if let Err(err) = parse_caps_args(&arguments) {
                return reply_err(err);
            }
            return reply_err(QmpError::not_found(
                "Capabilities negotiation is already complete, command ignored",
            ));
        }
        Action::Forward {
            command,
            arguments,
            id,
        }
    }

    /// qmp_dispatch_check_obj(): returns the command name and whether it
    /// came as `exec-oob`.
    fn check_obj(&self, dict: &Map<String, Value>) -> Result<(String, bool), QmpError> {
        let mut exec_key: Option<&str> = None;
        for key in qdict_keys(dict) {
            let value = &dict[key.as_str()];
            match key.as_str() {
                k @ ("execute" | "exec-oob") if k == "execute" || self.oob => {
                    if !value.is_string() {
                        return Err(QmpError::generic(format!(
                            "QMP input member '{k}' must be a string"
                        )));
                    }
                    if let Some(prev) = exec_key {
                        return Err(QmpError::generic(format!(
                            "QMP input member '{k}' clashes with '{prev}'"
                        )));
                    }
                    exec_key = Some(k);
                }
                "arguments" => {
                    if !value.is_object() {
                        return Err(QmpError::generic(
                            "QMP input member 'arguments' must be an object",
                        ));
                    }
                }
                "id" => {}
                other => {
                    return Err(QmpError::generic(format!(
                        "QMP input member '{other}' is unexpected"
                    )))
                }
            }
        }
        let key = exec_key.ok_or_else(|| QmpError::generic("QMP input lacks member 'execute'"))?;
        let name = dict
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok((name, key == "exec-oob"))
    }
}

/// Validates `qmp_capabilities` arguments the way QEMU's QAPI input
/// visitor does (messages copied from QSD 10.0); returns whether `oob` was
/// requested.
fn parse_caps_args(args: &Map<String, Value>) -> Result<bool, QmpError> {
    let mut oob = false;
    if let Some(enable) = args.get("enable") {
        let Value::Array(items) = enable else {
            return Err(QmpError::generic(
                "Invalid parameter type for 'enable', expected: array",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                // `oob` is the only QMPCapability, and QSD offers it.
                Some("oob") => oob = true,
                // QEMU really names the element 'null' here.
                Some(other) => {
                    return Err(QmpError::generic(format!(
                        "Parameter 'null' does not accept value '{other}'"
                    )))
                }
                None => {
                    return Err(QmpError::generic(format!(
                        "Invalid parameter type for 'enable[{i}]', expected: string"
                    )))
                }
            }
        }
    }
    if let Some(extra) = args.keys().find(|k| k.as_str() != "enable") {
        return Err(QmpError::generic(format!(
            "Parameter '{extra}' is unexpected"
        )));
    }
    Ok(oob)
}

//! Authorization objects (`authz-simple`, `authz-list`, `authz-listfile`)
//! and the table they live in, shared with the TLS client verifier.
//!
//! The NBD server names its `tls-authz` object by id, and each connecting
//! client's identity is checked against whatever object has that id at
//! that moment (QEMU's `qauthz_is_allowed_by_id`): replacing the object
//! over QMP changes who may connect next, and a missing object lets no
//! one in. The table is read on the accept iothread, at handshake time
//! only, so a lock is fine there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::qapi::{AuthzFormat, AuthzListRules, AuthzPolicy, AuthzRule, Syntax};

/// An authorization object.
#[derive(Debug)]
pub enum Authz {
    /// `authz-simple`: exactly one identity.
    Simple { identity: String },
    /// `authz-list`: rules in order, then a default policy.
    List(RuleList),
    /// `authz-listfile`: a list kept in a JSON file.
    ListFile(ListFile),
}

impl Authz {
    /// Whether `identity` may in. `Err` is a reason to log (it denies too).
    pub fn is_allowed(&self, identity: &str) -> Result<bool, String> {
        match self {
            Authz::Simple { identity: id } => Ok(id == identity),
            Authz::List(l) => Ok(l.is_allowed(identity)),
            Authz::ListFile(f) => f.is_allowed(identity),
        }
    }

    /// QOM type name.
    pub fn qom_type(&self) -> &'static str {
        match self {
            Authz::Simple { .. } => "authz-simple",
            Authz::List(_) => "authz-list",
            Authz::ListFile(_) => "authz-listfile",
        }
    }
}

/// The rules of an `authz-list` (or of an `authz-listfile` file).
#[derive(Debug, Clone, Default)]
pub struct RuleList {
    policy: AuthzPolicy,
    rules: Vec<AuthzRule>,
}

impl RuleList {
    pub fn new(o: AuthzListRules) -> RuleList {
        RuleList {
            policy: o.policy.unwrap_or_default(),
            rules: o.rules.unwrap_or_default(),
        }
    }

    /// The first matching rule decides, else the default policy.
    pub fn is_allowed(&self, identity: &str) -> bool {
        let hit = self
            .rules
            .iter()
            .find(|r| match r.format.unwrap_or_default() {
                AuthzFormat::Exact => r.match_ == identity,
                AuthzFormat::Glob => glob_match(&r.match_, identity),
            });
        hit.map_or(self.policy, |r| r.policy) == AuthzPolicy::Allow
    }
}

/// GLib's `g_pattern_match_simple`: `*` is any run of characters, `?` is
/// one character; nothing escapes them.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point (the last `*`): linear
    // in practice and never exponential.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `authz-listfile`: rules read from `filename` at creation and, with
/// `refresh`, again whenever the file's contents change (checked when a
/// client connects: the file is small and read at handshake time only). A
/// reload that fails denies everyone until the file is fixed, as QEMU does.
#[derive(Debug)]
pub struct ListFile {
    filename: PathBuf,
    refresh: bool,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    /// The contents the rules came from (`None`: unreadable).
    text: Option<String>,
    list: Option<RuleList>,
}

fn read_text(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| {
        let e = crate::error::describe(&e);
        format!("Unable to read '{}': {e}", path.display())
    })
}

impl ListFile {
    /// Loads the file; its errors are `object-add`'s.
    pub fn open(filename: &str, refresh: bool) -> Result<ListFile, String> {
        let path = PathBuf::from(filename);
        let text = read_text(&path)?;
        let list = parse_rules(&text)?;
        Ok(ListFile {
            filename: path,
            refresh,
            state: Mutex::new(FileState {
                text: Some(text),
                list: Some(list),
            }),
        })
    }

    fn is_allowed(&self, identity: &str) -> Result<bool, String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.refresh {
            let now = read_text(&self.filename);
            if now.as_ref().ok() != st.text.as_ref() {
                let parsed = now.clone().and_then(|t| parse_rules(&t));
                st.text = now.ok();
                match parsed {
                    Ok(l) => st.list = Some(l),
                    Err(e) => {
                        st.list = None;
                        return Err(e);
                    }
                }
            }
        }
        match &st.list {
            Some(l) => Ok(l.is_allowed(identity)),
            None => Err(format!(
                "authz-listfile {}: no valid rules loaded",
                self.filename.display()
            )),
        }
    }
}

/// Parses an `authz-list` in JSON (`{"policy": ..., "rules": [...]}`).
fn parse_rules(text: &str) -> Result<RuleList, String> {
    let value = crate::qmp::parse_json_text(text)?;
    let serde_json::Value::Object(members) = value else {
        return Err("Invalid parameter type for 'obj', expected: dict".into());
    };
    let rules: AuthzListRules = crate::qapi::Input::new(members, Syntax::Json)
        .parse()
        .map_err(|e| e.to_string())?;
    Ok(RuleList::new(rules))
}

/// The authorization objects by id; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct AuthzTable(Arc<RwLock<BTreeMap<String, Arc<Authz>>>>);

impl AuthzTable {
    pub fn insert(&self, id: String, a: Authz) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(a));
    }

    pub fn remove(&self, id: &str) -> bool {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .is_some()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Authz>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Whether `identity` may in by the object named `id` now. `Err`
    /// (denied, with the reason to log) when there is no such object.
    pub fn is_allowed(&self, id: &str, identity: &str) -> Result<bool, String> {
        match self.get(id) {
            Some(a) => a.is_allowed(identity),
            None => Err(format!("Cannot find QAuthZ object ID {id}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_is_glibs_simple_pattern() {
        assert!(glob_match("*", ""));
        assert!(glob_match("CN=*", "CN=client1"));
        assert!(glob_match("C=GB,*,CN=client?", "C=GB,O=Acme,CN=client1"));
        assert!(!glob_match("C=GB,*,CN=client?", "C=GB,O=Acme,CN=client12"));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(!glob_match("a*b*c", "aXXbYYb"));
        assert!(glob_match("é?", "éü"));
        assert!(!glob_match("", "x"));
        // No escapes: a backslash is a character like any other.
        assert!(glob_match("a\\*", "a\\zz"));
        // Pathological patterns stay fast.
        let text = "a".repeat(10_000);
        assert!(!glob_match(&("*a".repeat(50) + "b"), &text));
    }

    #[test]
    fn first_matching_rule_decides() {
        let rule = |m: &str, p, f| AuthzRule {
            match_: m.into(),
            policy: p,
            format: f,
        };
        let l = RuleList::new(AuthzListRules {
            policy: Some(AuthzPolicy::Deny),
            rules: Some(vec![
                rule("CN=bad", AuthzPolicy::Deny, None),
                rule("CN=*", AuthzPolicy::Allow, Some(AuthzFormat::Glob)),
            ]),
        });
        assert!(!l.is_allowed("CN=bad"));
        assert!(l.is_allowed("CN=good"));
        assert!(!l.is_allowed("O=x"));
        assert!(!RuleList::default().is_allowed("anyone"));
    }

    #[test]
    fn listfile_reloads_and_fails_closed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("acl.json");
        std::fs::write(&path, r#"{"rules": [{"match": "a", "policy": "allow"}]}"#).expect("w");
        let f = ListFile::open(&path.to_string_lossy(), true).expect("open");
        assert_eq!(f.is_allowed("a"), Ok(true));
        assert_eq!(f.is_allowed("b"), Ok(false));
        std::fs::write(&path, r#"{"policy": "allow", "rules": []}"#).expect("w");
        assert_eq!(f.is_allowed("b"), Ok(true));
        std::fs::write(&path, "{broken").expect("w");
        assert!(f.is_allowed("b").is_err());
        assert!(ListFile::open("/nonexistent/acl.json", true)
            .unwrap_err()
            .starts_with("Unable to read '/nonexistent/acl.json': No such file"));
    }
}

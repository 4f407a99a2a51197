//! What the user sees: text on stderr for people, or with `--json` one JSON object per line on
//! stdout for programs. Never prints a password except inside the code the owner must pass on.

use serde_json::{Value, json};

#[derive(Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// A machine-readable event; in text mode `text` is printed instead (if any).
    pub fn event(&self, event: &str, fields: Value, text: Option<&str>) {
        if self.json {
            println!("{}", json_line(event, &fields));
        } else if let Some(t) = text {
            eprintln!("{t}");
        }
    }

    /// Text for people only.
    pub fn say(&self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }
}

/// One event as a JSON line with `"event"` first, whatever the order of the other fields, so that
/// readers can tell events apart by their first bytes (`{"event":"code",...`).
fn json_line(event: &str, fields: &Value) -> String {
    let mut line = format!("{{\"event\":{}", json!(event));
    if let Value::Object(m) = fields {
        for (k, v) in m.iter().filter(|(k, _)| k.as_str() != "event") {
            line.push(',');
            line.push_str(&json!(k).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
    }
    line.push('}');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_comes_first_and_the_line_is_json() {
        let line = json_line(
            "connected",
            &json!({"a": 1, "peer": "owner", "remote": null, "event": "ignored", "z": "q\"x"}),
        );
        assert!(line.starts_with(r#"{"event":"connected","#), "{line}");
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["event"], "connected");
        assert_eq!(back["a"], 1);
        assert_eq!(back["z"], "q\"x");
        assert_eq!(back.as_object().unwrap().len(), 5);
        assert_eq!(json_line("stopped", &json!({})), r#"{"event":"stopped"}"#);
    }
}

//! What the user sees: text on stderr for people, or with `--json` one JSON object per line on
//! stdout for programs. Never prints a password except inside the code the owner must pass on.

use serde_json::{Value, json};

#[derive(Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// A machine-readable event; in text mode `text` is printed instead (if any).
    pub fn event(&self, event: &str, mut fields: Value, text: Option<&str>) {
        if self.json {
            if let Value::Object(m) = &mut fields {
                m.insert("event".into(), json!(event));
                // Keep "event" first for readers that grep.
                let mut ordered = serde_json::Map::new();
                ordered.insert("event".into(), json!(event));
                for (k, v) in m.iter() {
                    if k != "event" {
                        ordered.insert(k.clone(), v.clone());
                    }
                }
                println!("{}", Value::Object(ordered));
            }
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

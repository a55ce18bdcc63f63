//! JSON Schema checks on request bodies, with the `jsonschema` crate (no network or file
//! resolvers compiled in: a `$ref` to anything outside the schema document fails to compile).
//!
//! A schema is compiled once per table load; a body is checked only after the streaming
//! scanner ([`super::json_scan`]) accepted it, so parsing it is bounded in depth and size.

use std::fmt;

use serde_json::Value;

/// Longest instance path a rejection repeats (the path is made of the body's keys).
const MAX_PATH_CHARS: usize = 200;

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schema")
    }
}

/// Where a body first failed its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer to the failing value in the body (`""` for the root), at most
    /// [`MAX_PATH_CHARS`] characters.
    pub instance_path: String,
    /// The schema keyword that failed (`type`, `required`, `maxLength`, …), from the schema.
    pub keyword: String,
}

impl Schema {
    /// Compile `text` (a JSON Schema as JSON text); the error says why, without the text.
    pub fn compile(text: &str) -> Result<Schema, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("jsonSchema is not JSON text: {e}"))?;
        let validator = jsonschema::validator_for(&doc)
            .map_err(|e| format!("jsonSchema is not a valid JSON Schema: {e}"))?;
        Ok(Schema { validator })
    }

    /// Check `body`; the first violation names a path and a keyword, never a value.
    pub fn check(&self, body: &Value) -> Result<(), Violation> {
        let Err(e) = self.validator.validate(body) else {
            return Ok(());
        };
        let keyword = e
            .schema_path()
            .as_str()
            .rsplit('/')
            .find(|seg| !seg.is_empty() && !seg.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("schema")
            .to_string();
        Err(Violation {
            instance_path: truncate(e.instance_path().as_str()),
            keyword,
        })
    }
}

fn truncate(path: &str) -> String {
    match path.char_indices().nth(MAX_PATH_CHARS) {
        Some((i, _)) => format!("{}…", &path[..i]),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ORDER: &str = r#"{
        "type": "object",
        "required": ["id", "items"],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "items": {"type": "array", "items": {"type": "object",
                "properties": {"sku": {"type": "string", "maxLength": 8}}}}
        }
    }"#;

    #[test]
    fn valid_and_invalid_bodies() {
        let s = Schema::compile(ORDER).expect("compiles");
        assert_eq!(s.check(&json!({"id": 3, "items": []})), Ok(()));
        let v = s.check(&json!({"id": "x", "items": []})).expect_err("type");
        assert_eq!(v.instance_path, "/id");
        assert_eq!(v.keyword, "type");
        let v = s.check(&json!({"items": []})).expect_err("required");
        assert_eq!(v.instance_path, "");
        assert_eq!(v.keyword, "required");
        let v = s
            .check(&json!({"id": 1, "items": [{"sku": "ok"}, {"sku": "much-too-long"}]}))
            .expect_err("maxLength");
        assert_eq!(v.instance_path, "/items/1/sku");
        assert_eq!(v.keyword, "maxLength");
    }

    #[test]
    fn violations_never_carry_values() {
        let s = Schema::compile(r#"{"properties": {"a": {"const": "expected"}}}"#).expect("ok");
        let v = s
            .check(&json!({"a": "secret-value-123"}))
            .expect_err("const");
        assert!(!format!("{v:?}").contains("secret-value-123"));
        // Long keys are cut.
        let key = "k".repeat(1000);
        let s = Schema::compile(r#"{"additionalProperties": {"type": "integer"}}"#).expect("ok");
        let mut body = serde_json::Map::new();
        body.insert(key, json!("not an integer"));
        let v = s
            .check(&Value::Object(body))
            .expect_err("additionalProperties");
        assert_eq!(v.keyword, "type");
        assert!(v.instance_path.starts_with("/kkk"));
        assert_eq!(v.instance_path.chars().count(), MAX_PATH_CHARS + 1);
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert!(Schema::compile(ORDER).is_ok());
        assert!(Schema::compile("true").is_ok());
        assert!(Schema::compile("{not json").is_err());
        assert!(Schema::compile(r#"{"type": "no-such-type"}"#).is_err());
        assert!(Schema::compile(r#"{"minLength": -1}"#).is_err());
        // No resolver reaches out of the document (no network, no files).
        assert!(Schema::compile(r#"{"$ref": "https://example.invalid/s.json"}"#).is_err());
        assert!(Schema::compile(r#"{"$ref": "file:///etc/passwd"}"#).is_err());
    }
}

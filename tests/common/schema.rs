//! A small JSON Schema checker for the payload schemas in `docs/schema/`: the keywords they use
//! (`type`, `enum`, `const`, `required`, `properties`, `additionalProperties`, `items`,
//! `minItems`, `maxItems`, `minimum`, `maximum`, `anyOf`, `$ref` within and across the files,
//! `format: date-time`), each checked as JSON Schema 2020-12 defines it. Every other keyword
//! fails the check, so a schema cannot silently say more than is checked.

use std::path::Path;

use serde_json::Value;

/// Checks `value` against `docs/schema/<file>`; returns every violation, with its path.
pub fn violations(file: &str, value: &Value) -> Vec<String> {
    let schema = load(file);
    let mut out = Vec::new();
    check(file, &schema, &schema, value, "$", &mut out);
    out
}

/// Panics with every violation of `value` against `docs/schema/<file>`.
pub fn assert_valid(file: &str, value: &Value) {
    let v = violations(file, value);
    assert!(
        v.is_empty(),
        "{value}\ndoes not fit docs/schema/{file}:\n{}",
        v.join("\n")
    );
}

fn load(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn resolve(file: &str, root: &Value, reference: &str) -> (String, Value, Value) {
    let (target, pointer) = reference.split_once('#').unwrap_or((reference, ""));
    let (file, root) = if target.is_empty() {
        (file.to_owned(), root.clone())
    } else {
        (target.to_owned(), load(target))
    };
    let node = root
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{file}: no {reference}"))
        .clone();
    (file, root, node)
}

fn is_type(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other:?}"),
    }
}

fn check(file: &str, root: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        panic!("{file}: schema at {at} is not an object");
    };
    for (key, want) in s {
        match key.as_str() {
            "$schema" | "$id" | "title" | "description" | "$defs" => {}
            "$ref" => {
                let (f, r, node) = resolve(file, root, want.as_str().unwrap());
                check(&f, &r, &node, v, at, out);
            }
            "type" => {
                let types: Vec<&str> = match want {
                    Value::String(t) => vec![t],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("{file}: bad type at {at}"),
                };
                if !types.iter().any(|t| is_type(t, v)) {
                    out.push(format!("{at}: {v} is not {types:?}"));
                }
            }
            "enum" => {
                if !want.as_array().unwrap().contains(v) {
                    out.push(format!("{at}: {v} not in {want}"));
                }
            }
            "const" => {
                if want != v {
                    out.push(format!("{at}: {v} is not {want}"));
                }
            }
            "format" => {
                assert_eq!(want, "date-time", "{file}: only date-time is checked");
                if let Some(t) = v.as_str()
                    && humantime::parse_rfc3339(t).is_err()
                {
                    out.push(format!("{at}: {t:?} is not an RFC 3339 time"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(x), Some(bound)) = (v.as_f64(), want.as_f64()) {
                    let ok = if key == "minimum" {
                        x >= bound
                    } else {
                        x <= bound
                    };
                    if !ok {
                        out.push(format!("{at}: {x} breaks {key} {bound}"));
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let Some(a) = v.as_array() {
                    let n = want.as_u64().unwrap() as usize;
                    if (key == "minItems" && a.len() < n) || (key == "maxItems" && a.len() > n) {
                        out.push(format!("{at}: {} items breaks {key} {n}", a.len()));
                    }
                }
            }
            "items" => {
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    check(file, root, want, item, &format!("{at}[{i}]"), out);
                }
            }
            "required" => {
                if let Some(o) = v.as_object() {
                    for k in want.as_array().unwrap().iter().filter_map(Value::as_str) {
                        if !o.contains_key(k) {
                            out.push(format!("{at}: missing {k:?}"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(o) = v.as_object() {
                    for (k, sub) in want.as_object().unwrap() {
                        if let Some(x) = o.get(k) {
                            check(file, root, sub, x, &format!("{at}.{k}"), out);
                        }
                    }
                }
            }
            "additionalProperties" => {
                let known = s.get("properties").and_then(Value::as_object);
                for (k, x) in v.as_object().into_iter().flatten() {
                    if known.is_some_and(|p| p.contains_key(k)) {
                        continue;
                    }
                    match want {
                        Value::Bool(false) => out.push(format!("{at}: unexpected key {k:?}")),
                        Value::Bool(true) => {}
                        sub => check(file, root, sub, x, &format!("{at}.{k}"), out),
                    }
                }
            }
            "anyOf" => {
                let all: Vec<Vec<String>> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|sub| {
                        let mut o = Vec::new();
                        check(file, root, sub, v, at, &mut o);
                        o
                    })
                    .collect();
                if all.iter().all(|o| !o.is_empty()) {
                    let each: Vec<String> =
                        all.iter().map(|o| format!("[{}]", o.join("; "))).collect();
                    out.push(format!("{at}: fits no anyOf branch: {}", each.join(" or ")));
                }
            }
            other => panic!("{file}: keyword {other:?} at {at} is not checked by this checker"),
        }
    }
}

//! Every field of Istio's CRD schemas is known to our types.
//!
//! For each kind and served version in `crd-all.gen.yaml`, every leaf of the
//! `spec` schema gets a minimal document that sets it (plus whatever its
//! ancestors require), with a value generated from the schema's type, enum,
//! format and bounds. Each document must decode.

mod common;

use mizzen_api::{Kind, ParseOptions, parse_documents_with};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
enum Step {
    Prop(String),
    Item,
    MapValue,
}

fn render(path: &[Step]) -> String {
    let mut s = String::from("spec");
    for step in path {
        match step {
            Step::Prop(p) => {
                s.push('.');
                s.push_str(p);
            }
            Step::Item => s.push_str("[]"),
            Step::MapValue => s.push_str("{}"),
        }
    }
    s
}

/// Leaf paths: scalars, and objects whose content is free-form.
fn leaves(schema: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    let mut descended = false;
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            path.push(Step::Prop(name.clone()));
            leaves(sub, path, out);
            path.pop();
            descended = true;
        }
    }
    if let Some(items) = schema.get("items") {
        path.push(Step::Item);
        leaves(items, path, out);
        path.pop();
        descended = true;
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        path.push(Step::MapValue);
        leaves(ap, path, out);
        path.pop();
        descended = true;
    }
    if !descended {
        out.push(path.clone());
    }
}

fn number_in_range(schema: &Value, preferred: f64) -> f64 {
    let min = schema.get("minimum").and_then(Value::as_f64);
    let max = schema.get("maximum").and_then(Value::as_f64);
    let mut v = preferred;
    if let Some(min) = min
        && v < min
    {
        v = min;
    }
    if let Some(max) = max
        && v > max
    {
        v = max;
    }
    v
}

/// A value satisfying `schema` (its required fields included).
fn generate(schema: &Value) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if schema.get("x-kubernetes-int-or-string").is_some() {
        return json!(1);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => match schema.get("format").and_then(Value::as_str) {
            Some("byte") => json!("aGVsbG8="),
            Some("date-time") => json!("2024-01-01T00:00:00Z"),
            _ => json!("x"),
        },
        Some("integer") => {
            #[allow(clippy::cast_possible_truncation)]
            let v = number_in_range(schema, 80.0) as i64;
            json!(v)
        }
        Some("number") => json!(number_in_range(schema, 1.5)),
        Some("boolean") => json!(true),
        Some("array") => match schema.get("items") {
            Some(items) => json!([generate(items)]),
            None => json!([]),
        },
        _ => {
            let mut obj = Map::new();
            let props = schema.get("properties").and_then(Value::as_object);
            if let (Some(props), Some(required)) =
                (props, schema.get("required").and_then(Value::as_array))
            {
                for name in required.iter().filter_map(Value::as_str) {
                    if let Some(sub) = props.get(name) {
                        obj.insert(name.to_string(), generate(sub));
                    }
                }
            }
            if props.is_none() && schema.get("x-kubernetes-preserve-unknown-fields").is_some() {
                obj.insert("anything".to_string(), json!({"nested": [1, "two"]}));
            }
            Value::Object(obj)
        }
    }
}

/// A value for `schema` that sets the field at `path`.
fn build(schema: &Value, path: &[Step]) -> Value {
    let Some((step, rest)) = path.split_first() else {
        return generate(schema);
    };
    match step {
        Step::Prop(name) => {
            let mut obj = match generate(schema) {
                Value::Object(o) => o,
                _ => Map::new(),
            };
            let sub = &schema["properties"][name.as_str()];
            obj.insert(name.clone(), build(sub, rest));
            Value::Object(obj)
        }
        Step::Item => json!([build(&schema["items"], rest)]),
        // Numeric keys suit every map, including those keyed by port.
        Step::MapValue => json!({"8080": build(&schema["additionalProperties"], rest)}),
    }
}

#[test]
fn every_crd_field_is_known() {
    let Some(data) = common::istio_data("every_crd_field_is_known") else {
        return;
    };
    let text =
        std::fs::read_to_string(data.join("manifests/charts/base/files/crd-all.gen.yaml")).unwrap();
    let crds: Vec<Value> = serde_saphyr::from_multiple(&text).expect("CRD file parses");
    let options = ParseOptions {
        lenient: false,
        validate: false,
    };
    let mut checked_kinds = Vec::new();
    let mut documents = 0;
    let mut failures = Vec::new();
    for crd in &crds {
        let kind_name = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let Some(kind) = Kind::from_name(kind_name) else {
            println!("not covered (not a Mizzen kind): {group}/{kind_name}");
            continue;
        };
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            if version["served"] != json!(true) {
                continue;
            }
            let v = version["name"].as_str().unwrap_or_default();
            let api_version = format!("{group}/{v}");
            assert!(
                kind.accepts_api_version(&api_version),
                "{kind} does not accept served version {api_version}"
            );
            let spec_schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            let mut paths = Vec::new();
            leaves(spec_schema, &mut Vec::new(), &mut paths);
            assert!(paths.len() > 1, "{kind_name} {v}: no leaves found");
            for path in &paths {
                let doc = json!({
                    "apiVersion": api_version,
                    "kind": kind_name,
                    "metadata": {"name": "coverage", "namespace": "default"},
                    "spec": build(spec_schema, path),
                });
                let yaml = serde_json::to_string_pretty(&doc).unwrap();
                documents += 1;
                if let Err(errs) = parse_documents_with("coverage.yaml", &yaml, &options) {
                    failures.push(format!(
                        "{kind_name} {v} {}: {}",
                        render(path),
                        errs.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
            }
            checked_kinds.push(format!("{kind_name}/{v} ({} fields)", paths.len()));
        }
    }
    println!(
        "{documents} documents over {} kind versions:",
        checked_kinds.len()
    );
    for k in &checked_kinds {
        println!("  {k}");
    }
    let expected_kinds = [
        "Gateway",
        "VirtualService",
        "DestinationRule",
        "ServiceEntry",
        "WorkloadEntry",
        "WorkloadGroup",
        "Sidecar",
        "EnvoyFilter",
        "ProxyConfig",
        "PeerAuthentication",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "Telemetry",
        "WasmPlugin",
    ];
    for k in expected_kinds {
        assert!(
            checked_kinds
                .iter()
                .any(|c| c.starts_with(&format!("{k}/"))),
            "{k} missing from the CRD file"
        );
    }
    assert!(
        failures.is_empty(),
        "{} fields not accepted:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! The exact text of error messages, and where they point.

use mizzen_api::{ConfigError, parse_documents};

fn errors(text: &str) -> Vec<String> {
    match parse_documents("routes.yaml", text) {
        Ok(r) => panic!("expected errors, got {r:?}"),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

const GOOD_VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts: [ratings]
  http:
  - route:
    - destination:
        host: ratings
";

#[test]
fn unknown_field_names_parent_path_field_and_line() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        prefix: /api
    - uri:
        exakt: /foo
    route:
    - destination:
        host: reviews
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml: document 0 (VirtualService bookinfo/reviews): spec.http[0].match[1].uri: \
          unknown field `exakt`, expected one of `exact`, `prefix`, `regex` (line 13)"
        ]
    );
}

#[test]
fn unknown_struct_field() {
    let text = "\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    lables:
      version: v1
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml: document 0 (DestinationRule default/reviews): spec.subsets[0]: \
          unknown field `lables`, expected one of `name`, `labels`, `trafficPolicy` (line 9)"
        ]
    );
}

#[test]
fn wrong_type() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: lots
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml: document 0 (DestinationRule default/reviews): \
          spec.trafficPolicy.connectionPool.tcp.maxConnections: invalid type: string \"lots\", expected i32 (line 10)"
        ]
    );
}

#[test]
fn wrong_enum_value() {
    let text = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: strict
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml: document 0 (PeerAuthentication istio-system/default): spec.mtls.mode: \
          Unsupported value: \"strict\": supported values: \"UNSET\", \"DISABLE\", \"PERMISSIVE\", \"STRICT\" (line 8)"
        ]
    );
}

#[test]
fn unknown_kind() {
    let text = "\
apiVersion: example.com/v1
kind: Frobnicator
metadata:
  name: x
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml: document 0 (Frobnicator default/x): kind: unknown kind \"Frobnicator\" \
          (apiVersion \"example.com/v1\") (line 2)"
        ]
    );
}

#[test]
fn unsupported_api_version() {
    let text = "\
apiVersion: networking.istio.io/v2
kind: VirtualService
metadata:
  name: x
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml: document 0 (VirtualService default/x): apiVersion: unsupported apiVersion \
          \"networking.istio.io/v2\" for kind VirtualService, expected one of networking.istio.io/v1, \
          networking.istio.io/v1beta1, networking.istio.io/v1alpha3 (line 1)"
        ]
    );
}

#[test]
fn missing_kind() {
    assert_eq!(
        errors("apiVersion: v1\nmetadata:\n  name: x\n"),
        ["routes.yaml: document 0 (x): kind: missing field `kind` (line 1)"]
    );
}

#[test]
fn bad_document_in_the_middle_is_numbered() {
    let text = format!(
        "---\n# leading marker and a comment-only document do not count\n---\n{GOOD_VS}---\n\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts: [\"*\"]
    tls:
      mode: SIMPLE
      credentialName: bookinfo-cert
      httpsRedirect: yes
      minProtocolVersion: TLSV1_4
---\n{GOOD_VS}"
    );
    assert_eq!(
        errors(&text),
        [
            "routes.yaml: document 1 (Gateway default/bookinfo-gateway): \
          spec.servers[0].tls.minProtocolVersion: Unsupported value: \"TLSV1_4\": supported values: \
          \"TLS_AUTO\", \"TLSV1_0\", \"TLSV1_1\", \"TLSV1_2\", \"TLSV1_3\" (line 32)"
        ]
    );
}

#[test]
fn every_bad_document_is_reported() {
    let bad = GOOD_VS.replace("host: ratings", "host: ratings\n        subsett: v1");
    let text = format!("{bad}---\n{GOOD_VS}---\n{bad}");
    let errs = parse_documents("routes.yaml", &text).unwrap_err();
    let docs: Vec<(usize, Option<usize>)> = errs.iter().map(|e| (e.document, e.line)).collect();
    assert_eq!(docs, [(0, Some(11)), (2, Some(34))]);
}

#[test]
fn yaml_syntax_error_has_file_line() {
    let text = format!("{GOOD_VS}---\nkind: Gateway\nspec:\n  servers: [\n");
    assert_eq!(
        errors(&text),
        ["routes.yaml: document 1: invalid YAML: unclosed bracket '[' (line 14)"]
    );
}

#[test]
fn validation_error_has_path_and_line() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        port:
          number: 70000
";
    assert_eq!(
        errors(text),
        ["routes.yaml: document 0 (VirtualService default/reviews): \
          spec.http[0].route[0].destination.port.number: port number 70000 must be in the range 1..65535 (line 12)"]
    );
}

#[test]
fn missing_required_field_points_at_it() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        subset: v1
";
    assert_eq!(
        errors(text),
        ["routes.yaml: document 0 (VirtualService default/reviews): \
          spec.http[0].route[0].destination.host: missing field `host` (line 9)"]
    );
}

#[test]
fn kubernetes_types_reject_unknown_fields() {
    let text = "\
apiVersion: v1
kind: Service
metadata:
  name: details
spec:
  ports:
  - port: 9080
    protocl: TCP
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml: document 0 (Service default/details): spec.ports[0]: unknown field `protocl` (line 8)"
        ]
    );
}

#[test]
fn metadata_rejects_unknown_fields() {
    let text = GOOD_VS.replace(
        "  name: ratings\n",
        "  name: ratings\n  lables:\n    app: ratings\n",
    );
    assert_eq!(
        errors(&text),
        [
            "routes.yaml: document 0 (VirtualService default/ratings): metadata: unknown field `lables` (line 5)"
        ]
    );
}

#[test]
fn error_fields_are_filled() {
    let text = GOOD_VS.replace("host: ratings", "host: ratings\n        subset: V1");
    let errs = parse_documents("f.yaml", &text).unwrap_err();
    assert_eq!(
        errs,
        [ConfigError {
            file: "f.yaml".into(),
            document: 0,
            kind: Some("VirtualService".into()),
            namespace: Some("default".into()),
            name: Some("ratings".into()),
            field: Some("spec.http[0].route[0].destination.subset".into()),
            line: Some(11),
            message: "subset name is invalid: V1".into(),
        }]
    );
}

#[test]
fn hostile_input_is_an_error_not_a_crash() {
    let deep = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\ndata: {}\n",
        "[".repeat(5000)
    );
    let errs = parse_documents("deep.yaml", &deep).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].document, 0);
    println!("{}", errs[0]);
    for text in [
        "- a\n- b\n",
        "just a string\n",
        "{a: 1}\n",
        "apiVersion: [v1]\nkind: Service\n",
    ] {
        let errs = parse_documents("odd.yaml", text).unwrap_err();
        assert!(!errs.is_empty(), "{text}");
    }
    let big = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 99999999999999999999999, name: a, protocol: HTTP}\n    hosts: [\"*\"]\n";
    assert!(parse_documents("big.yaml", big).is_err());
}

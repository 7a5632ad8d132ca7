//! Behaviour of the types themselves: defaults, conversions, accessors,
//! leniency Istio has, and round trips.

mod common;

use mizzen_api::networking::{StringMatch, VirtualService};
use mizzen_api::{
    DEFAULT_NAMESPACE, Kind, Resource, ResourceKey, WorkloadInstance, parse_documents,
    parse_documents_lenient, parse_duration, validate,
};
use std::time::Duration;

fn one(text: &str) -> Resource {
    let mut r = parse_documents("t.yaml", text).unwrap_or_else(|errs| {
        panic!(
            "{}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(r.len(), 1);
    r.remove(0)
}

#[test]
fn workload_defaults_and_instance() {
    let r = one(
        "apiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: reviews-v1\n  labels: {app: reviews, version: v1}\nspec:\n  address: 127.0.0.11\n  ports: {http: 9080}\n",
    );
    let Resource::Workload(w) = &r else {
        panic!("not a workload: {r:?}")
    };
    assert!(w.spec.sidecar);
    assert_eq!(w.spec.service_account(), "default");
    let inst = WorkloadInstance::from(w);
    assert_eq!(inst.name, "reviews-v1");
    assert_eq!(inst.namespace, DEFAULT_NAMESPACE);
    assert_eq!(inst.labels["version"], "v1");
    assert_eq!(inst.service_account, "default");
    assert_eq!(inst.address, "127.0.0.11");
    assert_eq!(inst.ports["http"], 9080);
    assert!(inst.sidecar);

    let r = one(
        "apiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: legacy\n  namespace: ns1\nspec:\n  address: 127.0.0.12\n  serviceAccount: legacy-sa\n  sidecar: false\n",
    );
    let Resource::Workload(w) = &r else { panic!() };
    let inst = WorkloadInstance::from(w);
    assert!(!inst.sidecar);
    assert_eq!(inst.service_account, "legacy-sa");
    assert_eq!(inst.namespace, "ns1");
}

#[test]
fn workload_entry_instance_matches_istio() {
    let r = one(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: vm1\n  labels: {version: v2}\nspec:\n  address: 10.0.0.5\n  serviceAccount: vm-sa\n  labels: {app: ratings, version: v1}\n  ports: {http: 9080}\n",
    );
    let Resource::WorkloadEntry(we) = &r else {
        panic!()
    };
    let inst = WorkloadInstance::from(we);
    // Metadata labels win over spec labels.
    assert_eq!(inst.labels["version"], "v2");
    assert_eq!(inst.labels["app"], "ratings");
    // A service account means Istio mTLS.
    assert!(inst.sidecar);
    assert_eq!(inst.service_account, "vm-sa");

    let r = one(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: vm2\nspec:\n  address: 10.0.0.6\n  serviceAccount: vm-sa\n  labels: {security.istio.io/tlsMode: disabled}\n",
    );
    let Resource::WorkloadEntry(we) = &r else {
        panic!()
    };
    assert!(!WorkloadInstance::from(we).sidecar);
    let r = one(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: vm3\nspec:\n  address: 10.0.0.7\n",
    );
    let Resource::WorkloadEntry(we) = &r else {
        panic!()
    };
    let inst = WorkloadInstance::from(we);
    assert!(!inst.sidecar);
    assert_eq!(inst.service_account, "default");
}

#[test]
fn accessors_and_keys() {
    let r = one(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n",
    );
    assert_eq!(r.kind(), Kind::VirtualService);
    assert_eq!(r.kind().as_str(), "VirtualService");
    assert_eq!(r.name(), "reviews");
    assert_eq!(r.namespace(), "default");
    let key = r.key();
    assert_eq!(
        key,
        ResourceKey {
            kind: Kind::VirtualService,
            namespace: "default".into(),
            name: "reviews".into()
        }
    );
    assert_eq!(key.to_string(), "VirtualService default/reviews");
    let other = ResourceKey {
        kind: Kind::VirtualService,
        namespace: "default".into(),
        name: "ratings".into(),
    };
    assert!(other < key);
    assert!(validate(&r).is_empty());
}

#[test]
fn numbers_may_be_strings_as_istio_allows() {
    let r = one(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers:\n  - port: {number: \"8080\", name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
    );
    let Resource::Gateway(g) = &r else { panic!() };
    assert_eq!(g.spec.servers[0].port.number, 8080);
    let errs = parse_documents(
        "t.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers:\n  - port: {number: eighty, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
    )
    .unwrap_err();
    assert_eq!(
        errs[0].field.as_deref(),
        Some("spec.servers[0].port.number")
    );
}

#[test]
fn empty_string_matches() {
    let r = one(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - uri: {}\n      headers:\n        end-user: {exact: jason}\n        x-canary: {}\n    route:\n    - destination: {host: reviews}\n",
    );
    let Resource::VirtualService(vs) = &r else {
        panic!()
    };
    let m = &vs.spec.http[0].r#match[0];
    assert_eq!(m.uri, None);
    assert_eq!(
        m.headers["end-user"],
        Some(StringMatch::Exact("jason".into()))
    );
    assert_eq!(m.headers["x-canary"], None);
    let errs = parse_documents(
        "t.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: reviews}\n",
    )
    .unwrap_err();
    assert!(
        errs[0]
            .message
            .contains("only one of `exact`, `prefix` or `regex`")
    );
}

#[test]
fn kubernetes_list_items_are_read() {
    let rs = parse_documents(
        "t.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec:\n    ports: [{port: 80}]\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n  stringData: {k: v}\n",
    )
    .unwrap();
    let kinds: Vec<Kind> = rs.iter().map(Resource::kind).collect();
    assert_eq!(kinds, [Kind::Service, Kind::Secret]);
    let errs = parse_documents(
        "t.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec:\n    portz: []\n",
    )
    .unwrap_err();
    assert_eq!(errs[0].field.as_deref(), Some("items[0].spec"));
    assert_eq!(errs[0].line, Some(8));
}

#[test]
fn lenient_mode_still_checks_istio_kinds() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: x}\n";
    let errs = parse_documents_lenient("t.yaml", text).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].document, 1);
    assert!(errs[0].message.contains("unknown kind \"VirtualServce\""));
    let parsed = parse_documents_lenient(
        "t.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\n",
    )
    .unwrap();
    assert!(parsed.resources.is_empty());
    assert_eq!(parsed.skipped[0].kind, "Gateway");
    assert_eq!(parsed.skipped[0].line, 2);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    assert!(parse_duration("soon").is_err());
}

#[test]
fn spec_types_round_trip_through_json() {
    let Some(data) = common::istio_data("spec_types_round_trip_through_json") else {
        return;
    };
    let mut count = 0;
    for f in common::yaml_files(&data.join("samples/bookinfo/networking")) {
        let text = std::fs::read_to_string(&f).unwrap();
        for r in parse_documents("t.yaml", &text).unwrap() {
            if let Resource::VirtualService(vs) = &r {
                let json = serde_json::to_string(vs).unwrap();
                let back = parse_documents("t.json", &json).unwrap();
                assert_eq!(back, std::slice::from_ref(&r), "{json}");
                let spec: VirtualService =
                    serde_json::from_str(&serde_json::to_string(&vs.spec).unwrap()).unwrap();
                assert_eq!(spec, vs.spec);
                count += 1;
            }
        }
    }
    assert!(count > 5);
}

#[test]
fn parse_file_names_the_file() {
    let path = std::env::temp_dir().join(format!("mizzen-api-test-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n",
    )
    .unwrap();
    let rs = mizzen_api::parse_file(&path).unwrap();
    assert_eq!(rs[0].labels()["app"], "web");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {portz: []}\n",
    )
    .unwrap();
    let errs = mizzen_api::parse_file(&path).unwrap_err();
    assert_eq!(errs[0].file, path.display().to_string());
    std::fs::remove_file(&path).unwrap();
    let errs = mizzen_api::parse_file(&path).unwrap_err();
    assert!(errs[0].message.starts_with("cannot read file"));
}

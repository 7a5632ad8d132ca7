//! Micro-benchmarks of mizzen-proxy's per-request config work: picking the
//! virtual host, matching routes, applying header mutations, and compiling
//! a route table when RDS changes.
//!
//! The sidecar table is the real one: mizzen-pilot's translation of a
//! generated mesh (every service a virtual host), compiled by mizzen-proxy.
//!
//! Run: `cargo bench -p mizzen-bench --bench routing` (add `-- --quick` for a
//! short pass).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use mizzen_bench::meshgen::{self, MeshSize};
use mizzen_pilot::config::ConfigStore;
use mizzen_pilot::model::Model;
use mizzen_pilot::node::ProxyNode;
use mizzen_pilot::translate::generate;
use mizzen_proxy::config::RouteTable;
use mizzen_proxy::config::headers::{AppendAction, HeaderAdd, HeaderOps};
use mizzen_proxy::config::route::RequestView;
use mizzen_xds::pb::envoy::config::route::v3 as rpb;
use mizzen_xds::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use mizzen_xds::pb::envoy::config::route::v3::route_match::PathSpecifier;
use mizzen_xds::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use mizzen_xds::type_url;

const SERVICES: usize = 1000;

/// The `http_proxy` route configuration mizzen-pilot sends a sidecar of a
/// mesh of `SERVICES` services.
fn sidecar_route_config() -> rpb::RouteConfiguration {
    let size = MeshSize {
        services: SERVICES,
        endpoints_per_service: 1,
        namespaces: 20,
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    meshgen::write_mesh(dir.path(), &size).expect("write the mesh");
    let mut store = ConfigStore::new(dir.path());
    store.rescan();
    let model = Model::build(&store.snapshot(), "cluster.local");
    let node = meshgen::sidecar_node(
        "127.20.0.1".parse().expect("address"),
        "bench",
        &meshgen::namespace_name(0),
        &meshgen::service_name(0),
    );
    let proxy = ProxyNode::from_node(&node.to_proto()).expect("node");
    let routes = generate(&model, &proxy, type_url::ROUTE, &["http_proxy".to_owned()]);
    mizzen_xds::unpack(&routes[0].body).expect("a RouteConfiguration")
}

fn forward(name: &str, m: rpb::RouteMatch) -> rpb::Route {
    rpb::Route {
        name: name.into(),
        r#match: Some(m),
        action: Some(rpb::route::Action::Route(rpb::RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(format!("outbound|80||{name}"))),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn prefix(p: &str) -> rpb::RouteMatch {
    rpb::RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

/// A gateway-style table: every host as `host` and `host:*`, as the pilot
/// writes gateway virtual hosts, so a Host with a port is found among the
/// `prefix*` wildcards.
fn gateway_route_config(hosts: usize) -> rpb::RouteConfiguration {
    rpb::RouteConfiguration {
        name: "http.8080".into(),
        virtual_hosts: (0..hosts)
            .map(|i| {
                let host = format!("h{i:04}.example.com");
                rpb::VirtualHost {
                    name: format!("{host}:80"),
                    domains: vec![host.clone(), format!("{host}:*")],
                    routes: vec![forward(&host, prefix("/"))],
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

/// One virtual host with the kinds of routes a VirtualService produces:
/// header match, regex path, exact path, prefixes, then a catch-all.
fn virtual_service_routes() -> rpb::RouteConfiguration {
    let header = |name: &str, value: &str| rpb::HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(rpb::header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(value.into())),
                ignore_case: false,
            },
        )),
        ..Default::default()
    };
    let mut routes = vec![
        forward(
            "jason",
            rpb::RouteMatch {
                headers: vec![header("end-user", "jason")],
                ..prefix("/")
            },
        ),
        forward(
            "items",
            rpb::RouteMatch {
                path_specifier: Some(PathSpecifier::SafeRegex(RegexMatcher {
                    regex: "/items/[0-9]+".into(),
                    engine_type: None,
                })),
                ..Default::default()
            },
        ),
        forward(
            "login",
            rpb::RouteMatch {
                path_specifier: Some(PathSpecifier::Path("/login".into())),
                ..Default::default()
            },
        ),
    ];
    for i in 0..6 {
        routes.push(forward(
            &format!("api-v{i}"),
            prefix(&format!("/api/v{i}/")),
        ));
    }
    routes.push(forward("default", prefix("/")));
    rpb::RouteConfiguration {
        name: "vs".into(),
        virtual_hosts: vec![rpb::VirtualHost {
            name: "reviews".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "reviews.default.svc.cluster.local:80"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate, br"),
        ("content-type", "application/json"),
        ("x-request-id", "7c1e0a5e-8c1b-4b7e-9d6f-3c2a1b0e9f8d"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        ("x-forwarded-proto", "http"),
        ("end-user", "alice"),
        ("cookie", "sid=abc123; theme=dark"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn vhost_selection(c: &mut Criterion) {
    let sidecar = RouteTable::compile(&sidecar_route_config()).expect("sidecar table compiles");
    let gateway = RouteTable::compile(&gateway_route_config(SERVICES)).expect("gateway table");
    let mut g = c.benchmark_group("virtual_host");
    g.bench_function("sidecar_1000/fqdn_with_port", |b| {
        b.iter(|| sidecar.virtual_host(black_box("svc-0500.mesh-00.svc.cluster.local:80")))
    });
    g.bench_function("sidecar_1000/short_name", |b| {
        b.iter(|| sidecar.virtual_host(black_box("svc-0020")))
    });
    g.bench_function("sidecar_1000/miss", |b| {
        b.iter(|| sidecar.virtual_host(black_box("unknown.example.org")))
    });
    g.bench_function("sidecar_1000/uppercase_fqdn", |b| {
        b.iter(|| sidecar.virtual_host(black_box("SVC-0500.MESH-00.SVC.CLUSTER.LOCAL:80")))
    });
    g.bench_function("gateway_1000/host_without_port", |b| {
        b.iter(|| gateway.virtual_host(black_box("h0500.example.com")))
    });
    // `host:*` domains are prefix wildcards: found by a scan of all of them.
    g.bench_function("gateway_1000/host_with_port", |b| {
        b.iter(|| gateway.virtual_host(black_box("h0500.example.com:8080")))
    });
    g.finish();
}

fn route_matching(c: &mut Criterion) {
    let table = RouteTable::compile(&virtual_service_routes()).expect("routes compile");
    let vhost = table.virtual_host("reviews").expect("the catch-all host");
    let headers = request_headers();
    let mut jason = request_headers();
    jason.insert("end-user", HeaderValue::from_static("jason"));
    let get = Method::GET;
    let mut g = c.benchmark_group("route");
    for (name, path, h) in [
        ("first_route_header_match", "/reviews/1", &jason),
        ("regex_path", "/items/42", &headers),
        ("prefix_after_8_misses", "/api/v5/ratings?x=1", &headers),
        ("catch_all_after_9_misses", "/productpage", &headers),
    ] {
        let request = RequestView {
            method: &get,
            scheme: "http",
            authority: "reviews:80",
            path,
            headers: h,
        };
        g.bench_function(name, |b| b.iter(|| vhost.route(black_box(&request))));
    }
    g.finish();
}

fn header_mutations(c: &mut Criterion) {
    let add = |name: &'static str, value: &'static str, action| HeaderAdd {
        name: HeaderName::from_static(name),
        value: HeaderValue::from_static(value),
        action,
    };
    let ops = HeaderOps {
        add: vec![
            add(
                "x-envoy-peer",
                "gateway",
                AppendAction::OverwriteIfExistsOrAdd,
            ),
            add("x-route", "reviews-v2", AppendAction::AppendIfExistsOrAdd),
            add("x-request-id", "keep", AppendAction::AddIfAbsent),
        ],
        remove: vec![
            HeaderName::from_static("cookie"),
            HeaderName::from_static("x-b3-sampled"),
        ],
    };
    let template = request_headers();
    let mut g = c.benchmark_group("headers");
    g.bench_function("clone_request_headers", |b| {
        b.iter(|| black_box(&template).clone())
    });
    g.bench_function("clone_and_apply_3_adds_2_removes", |b| {
        b.iter(|| {
            let mut h = black_box(&template).clone();
            ops.apply(&mut h);
            h
        })
    });
    g.finish();
}

fn compilation(c: &mut Criterion) {
    let sidecar = sidecar_route_config();
    let mut g = c.benchmark_group("compile");
    g.sample_size(20);
    g.bench_function("sidecar_route_table_1000_services", |b| {
        b.iter(|| RouteTable::compile(black_box(&sidecar)).expect("compiles"))
    });
    g.finish();
}

criterion_group!(
    benches,
    vhost_selection,
    route_matching,
    header_mutations,
    compilation
);
criterion_main!(benches);

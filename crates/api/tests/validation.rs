//! Istio's admission-webhook rules for the main kinds.

use mizzen_api::parse_documents;

/// Parses `spec` (indented by two spaces already) as a `kind` document.
fn doc(kind: &str, name: &str, spec: &str) -> String {
    let api = match kind {
        "PeerAuthentication" | "RequestAuthentication" | "AuthorizationPolicy" => {
            "security.istio.io/v1"
        }
        "EnvoyFilter" => "networking.istio.io/v1alpha3",
        "Workload" => "mizzen.io/v1alpha1",
        _ => "networking.istio.io/v1",
    };
    format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

#[track_caller]
fn accepted(kind: &str, spec: &str) {
    let text = doc(kind, "test", spec);
    if let Err(errs) = parse_documents("t.yaml", &text) {
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        panic!("rejected:\n{text}\n{}", all.join("\n"));
    }
}

/// Rejected with an error at `field` whose message contains `message`.
#[track_caller]
fn rejected(kind: &str, spec: &str, field: &str, message: &str) {
    rejected_named(kind, "test", spec, field, message);
}

#[track_caller]
fn rejected_named(kind: &str, name: &str, spec: &str, field: &str, message: &str) {
    let text = doc(kind, name, spec);
    match parse_documents("t.yaml", &text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errs) => {
            let hit = errs
                .iter()
                .any(|e| e.field.as_deref() == Some(field) && e.message.contains(message));
            let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
            assert!(hit, "wanted {field}: {message}\ngot:\n{}", all.join("\n"));
        }
    }
}

const ROUTE: &str = "  - route:\n    - destination:\n        host: reviews\n";

#[test]
fn virtual_service_rules() {
    accepted(
        "VirtualService",
        &format!("  hosts: [reviews]\n  http:\n{ROUTE}"),
    );
    accepted(
        "VirtualService",
        "  hosts: [\"*.example.com\"]\n  gateways: [istio-system/gw]\n  http:\n  - match:\n    - uri: {prefix: /}\n      headers:\n        x-present: {}\n    redirect:\n      uri: /new\n      redirectCode: 308\n",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n",
        "spec",
        "http, tcp or tls must be provided",
    );
    rejected(
        "VirtualService",
        &format!("  hosts: [\"*\"]\n  http:\n{ROUTE}"),
        "spec.hosts[0]",
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
    );
    rejected(
        "VirtualService",
        &format!("  hosts: [\"foo.*.com\"]\n  http:\n{ROUTE}"),
        "spec.hosts[0]",
        "invalid",
    );
    rejected(
        "VirtualService",
        &format!("  hosts: [reviews]\n  gateways: [\"a/b/c\"]\n  http:\n{ROUTE}"),
        "spec.gateways[0]",
        "invalid value for gateway name",
    );
    rejected(
        "VirtualService",
        &format!("  hosts: [reviews]\n  http:\n{ROUTE}    redirect:\n      uri: /x\n"),
        "spec.http[0]",
        "HTTP route cannot contain both route and redirect",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /}\n",
        "spec.http[0]",
        "HTTP route, redirect, directResponse or delegate is required",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 0\n    - destination: {host: reviews, subset: v2}\n",
        "spec.http[0].route",
        "total destination weight = 0",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: -5\n",
        "spec.http[0].route[0].weight",
        "weight -5 < 0",
    );
    rejected(
        "VirtualService",
        &format!("  hosts: [reviews]\n  http:\n{ROUTE}    timeout: 500us\n"),
        "spec.http[0].timeout",
        "must be a valid duration greater than 1ms",
    );
    rejected(
        "VirtualService",
        &format!(
            "  hosts: [reviews]\n  http:\n{ROUTE}    retries:\n      attempts: 3\n      retryOn: 5xx,sometimes\n"
        ),
        "spec.http[0].retries.retryOn",
        "\"sometimes\" is not a valid retryOn policy",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n  http:\n  - match:\n    - uri:\n        regex: \"(unclosed\"\n    route:\n    - destination: {host: reviews}\n",
        "spec.http[0].match[0].uri.regex",
        "invalid regex",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n  http:\n  - redirect:\n      uri: /x\n      redirectCode: 200\n",
        "spec.http[0].redirect.redirectCode",
        "200 is not a valid redirect code, must be 3xx",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n  http:\n  - directResponse:\n      status: 700\n",
        "spec.http[0].directResponse.status",
        "HTTP status 700 is not in range 200-599",
    );
    rejected(
        "VirtualService",
        &format!(
            "  hosts: [reviews]\n  http:\n{ROUTE}    fault:\n      abort:\n        httpStatus: 503\n        percentage: {{value: 150}}\n"
        ),
        "spec.http[0].fault.abort.percentage.value",
        "percentage 150 is not in range [0, 100]",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: V1}\n",
        "spec.http[0].route[0].destination.subset",
        "subset name is invalid: V1",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews.com]\n  tls:\n  - match:\n    - sniHosts: [other.com]\n    route:\n    - destination: {host: reviews}\n",
        "spec.tls[0].match[0].sniHosts[0]",
        "is not a compatible subset of any of the virtual service hosts",
    );
    rejected(
        "VirtualService",
        "  hosts: [reviews]\n  tcp:\n  - match:\n    - port: 27017\n",
        "spec.tcp[0].route",
        "TCP route is required",
    );
    rejected(
        "VirtualService",
        &format!("  hosts: [reviews]\n  exportTo: [\"*\", \".\"]\n  http:\n{ROUTE}"),
        "spec.exportTo",
        "cannot have both public (*) and non-public exportTo values",
    );
}

#[test]
fn destination_rule_rules() {
    accepted(
        "DestinationRule",
        "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      simple: LEAST_REQUEST\n  subsets:\n  - name: v1\n    labels: {version: v1}\n",
    );
    rejected(
        "DestinationRule",
        "  host: reviews\n  trafficPolicy: {}\n",
        "spec.trafficPolicy",
        "traffic policy must have at least one field",
    );
    rejected(
        "DestinationRule",
        "  host: reviews\n  subsets:\n  - name: v1\n  - name: v1\n",
        "spec.subsets[1].name",
        "duplicate subset names: v1",
    );
    rejected(
        "DestinationRule",
        "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: a/*\n          to: {\"b/*\": 60, \"c/*\": 30}\n",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "total locality weight 90 != 100",
    );
    rejected(
        "DestinationRule",
        "  host: reviews\n  trafficPolicy:\n    tls:\n      mode: MUTUAL\n",
        "spec.trafficPolicy.tls.clientCertificate",
        "client certificate required for mutual tls",
    );
    rejected(
        "DestinationRule",
        "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n      consistentHash: {useSourceIp: true}\n",
        "spec.trafficPolicy.loadBalancer",
        "only one of simple, consistentHash or backendUtilization can be set",
    );
    rejected(
        "DestinationRule",
        "  host: reviews\n  trafficPolicy:\n    outlierDetection:\n      maxEjectionPercent: 101\n",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "percentage 101 is not in range [0, 100]",
    );
    rejected(
        "DestinationRule",
        "  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        connectTimeout: 10 seconds\n",
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "must be a valid duration greater than 1ms",
    );
    rejected(
        "DestinationRule",
        "  host: reviews\n  trafficPolicy:\n    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n",
        "spec.trafficPolicy.portLevelSettings[0].port",
        "portTrafficPolicy must have valid port",
    );
}

const SERVER: &str =
    "  - port:\n      number: 80\n      name: http\n      protocol: HTTP\n    hosts: [\"*\"]\n";

#[test]
fn gateway_rules() {
    accepted(
        "Gateway",
        &format!("  selector: {{istio: ingressgateway}}\n  servers:\n{SERVER}"),
    );
    rejected(
        "Gateway",
        "  servers: []\n",
        "spec.servers",
        "gateway must have at least one server",
    );
    rejected_named(
        "Gateway",
        "my.gateway",
        &format!("  servers:\n{SERVER}"),
        "metadata.name",
        "invalid gateway name",
    );
    rejected(
        "Gateway",
        "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n",
        "spec.servers[0]",
        "server must have TLS settings for HTTPS/TLS protocols",
    );
    rejected(
        "Gateway",
        &format!("  servers:\n{SERVER}{}", SERVER.replace("80", "8080")),
        "spec.servers[1].port.name",
        "port names in servers must be unique",
    );
    rejected(
        "Gateway",
        "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [reviews]\n",
        "spec.servers[0].hosts[0]",
        "short names (non FQDN) are not allowed",
    );
    rejected(
        "Gateway",
        "  servers:\n  - port: {number: 80, name: http, protocol: HTTTP}\n    hosts: [\"*\"]\n",
        "spec.servers[0].port.protocol",
        "invalid protocol \"HTTTP\"",
    );
    rejected(
        "Gateway",
        "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE}\n",
        "spec.servers[0].tls",
        "SIMPLE TLS requires a server certificate",
    );
    rejected(
        "Gateway",
        "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: a, credentialNames: [b]}\n",
        "spec.servers[0].tls",
        "only one of credentialName or credentialNames can be set",
    );
}

#[test]
fn service_entry_rules() {
    accepted(
        "ServiceEntry",
        "  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - {number: 443, name: https, protocol: TLS}\n",
    );
    rejected(
        "ServiceEntry",
        "  hosts: [\"*.example.com\"]\n  resolution: DNS\n",
        "spec.hosts",
        "hosts must be FQDN if no endpoints are provided for resolution mode DNS",
    );
    rejected(
        "ServiceEntry",
        "  hosts: [a.example.com]\n  resolution: STATIC\n  endpoints:\n  - address: db.example.com\n",
        "spec.endpoints[0].address",
        "is not a valid IP address",
    );
    rejected(
        "ServiceEntry",
        "  hosts: [a.example.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTPX}\n",
        "spec.ports[0].protocol",
        "unrecognized protocol",
    );
}

#[test]
fn sidecar_rules() {
    accepted(
        "Sidecar",
        "  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n",
    );
    rejected(
        "Sidecar",
        "  {}\n",
        "spec",
        "sidecar: empty configuration provided",
    );
    rejected(
        "Sidecar",
        "  egress:\n  - hosts: [reviews.default.svc.cluster.local]\n",
        "spec.egress[0].hosts[0]",
        "host must be of form namespace/dnsName",
    );
    rejected(
        "Sidecar",
        "  egress:\n  - hosts: [\"*/*\"]\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*/*\"]\n",
        "spec.egress[0]",
        "the egress listener with empty port should be the last listener in the list",
    );
    rejected(
        "Sidecar",
        "  ingress:\n  - port: {number: 9080, name: http, protocol: HTTP}\n    defaultEndpoint: 10.0.0.1:9080\n",
        "spec.ingress[0].defaultEndpoint",
        "defaultEndpoint must be of form",
    );
    rejected(
        "Sidecar",
        "  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n    egressProxy: {host: proxy.example.com, port: {number: 3128}}\n",
        "spec.outboundTrafficPolicy",
        "egress_proxy must be set only with ALLOW_ANY",
    );
}

#[test]
fn envoy_filter_rules() {
    rejected(
        "EnvoyFilter",
        "  configPatches:\n  - applyTo: CLUSTER\n    patch:\n      operation: ADD\n",
        "spec.configPatches[0].patch.value",
        "Envoy filter: missing patch value for non-remove operation",
    );
    rejected(
        "EnvoyFilter",
        "  configPatches:\n  - applyTo: HTTP_FILTER\n    match:\n      cluster: {service: x}\n    patch:\n      operation: REMOVE\n",
        "spec.configPatches[0].match",
        "applyTo for listener class objects cannot have non listener match",
    );
}

#[test]
fn security_rules() {
    accepted(
        "AuthorizationPolicy",
        "  action: DENY\n  rules:\n  - from:\n    - source: {notNamespaces: [foo]}\n    to:\n    - operation: {methods: [POST], ports: [\"8080\"]}\n",
    );
    accepted("AuthorizationPolicy", "  {}\n");
    rejected(
        "AuthorizationPolicy",
        "  action: CUSTOM\n  rules:\n  - {}\n",
        "spec.provider",
        "must specify provider when using CUSTOM action",
    );
    rejected(
        "AuthorizationPolicy",
        "  rules:\n  - when:\n    - key: request.colour\n      values: [red]\n",
        "spec.rules[0].when[0].key",
        "unknown attribute: request.colour",
    );
    rejected(
        "AuthorizationPolicy",
        "  rules:\n  - from:\n    - source: {ipBlocks: [\"10.0.0.0/33\"]}\n",
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "invalid IP address or CIDR range",
    );
    rejected(
        "AuthorizationPolicy",
        "  rules:\n  - to:\n    - operation: {}\n",
        "spec.rules[0].to[0].operation",
        "`to.operation` must not be empty",
    );
    rejected(
        "RequestAuthentication",
        "  jwtRules:\n  - jwksUri: https://example.com/jwks\n",
        "spec.jwtRules[0].issuer",
        "issuer must be set",
    );
}

#[test]
fn metadata_rules() {
    rejected_named(
        "ServiceEntry",
        "Bad_Name",
        "  hosts: [a.example.com]\n",
        "metadata.name",
        "must be a lowercase RFC 1123 name",
    );
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  namespace: default\nspec:\n  hosts: [a.example.com]\n";
    let errs = parse_documents("t.yaml", text).unwrap_err();
    assert_eq!(errs[0].field.as_deref(), Some("metadata.name"));
    assert_eq!(errs[0].line, Some(3));
}

#[test]
fn workload_rules() {
    accepted("Workload", "  address: 127.0.0.2\n  ports: {http: 9080}\n");
    rejected(
        "Workload",
        "  address: reviews.local\n",
        "spec.address",
        "must be an IP address",
    );
    rejected(
        "Workload",
        "  address: 127.0.0.2\n  ports: {http: 0}\n",
        "spec.ports.http",
        "port number 0 must be in the range 1..65535",
    );
    rejected(
        "Workload",
        "  ports: {http: 80}\n",
        "spec.address",
        "missing field `address`",
    );
}

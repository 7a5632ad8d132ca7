//! Telemetry and WasmPlugin rules.

use super::Errors;
use super::common::url_scheme;
use crate::error::FieldPath;
use crate::extensions::{EnvValueSource, WasmPlugin};
use crate::telemetry::{TagOperation, Telemetry};
use regex::Regex;
use std::collections::BTreeSet;
use std::sync::LazyLock;

static SHA256: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("(^$|^[a-f0-9]{64}$)").unwrap_or_else(|e| panic!("{e}")));

pub(super) fn telemetry(t: &Telemetry, p: &FieldPath, e: &mut Errors) {
    e.policy_targets(
        p,
        t.selector.as_ref(),
        t.target_ref.as_ref(),
        &t.target_refs,
    );
    for (i, tr) in t.tracing.iter().enumerate() {
        let tp = p.key("tracing").index(i);
        for (j, prov) in tr.providers.iter().enumerate() {
            e.min_len(&tp.key("providers").index(j).key("name"), &prov.name, 1);
        }
        if let Some(pct) = tr.random_sampling_percentage {
            let pp = tp.key("randomSamplingPercentage");
            e.at_least_f64(&pp, pct, 0.0);
            e.at_most_f64(&pp, pct, 100.0);
        }
        for (name, tag) in &tr.custom_tags {
            let cp = tp.key("customTags").key(name);
            if name.is_empty() {
                e.add(&cp, "tag name may not be empty");
            }
            let set = usize::from(tag.literal.is_some())
                + usize::from(tag.environment.is_some())
                + usize::from(tag.header.is_some())
                + usize::from(tag.formatter.is_some());
            if set > 1 {
                e.add(
                    &cp,
                    "only one of literal, environment, header or formatter can be set",
                );
            }
            if let Some(l) = &tag.literal {
                e.min_len(&cp.key("literal").key("value"), &l.value, 1);
            }
            if let Some(env) = &tag.environment {
                e.min_len(&cp.key("environment").key("name"), &env.name, 1);
            }
            if let Some(h) = &tag.header {
                e.min_len(&cp.key("header").key("name"), &h.name, 1);
            }
            if let Some(f) = &tag.formatter {
                e.min_len(&cp.key("formatter").key("value"), &f.value, 1);
            }
        }
    }
    for (i, m) in t.metrics.iter().enumerate() {
        let mp = p.key("metrics").index(i);
        for (j, prov) in m.providers.iter().enumerate() {
            e.min_len(&mp.key("providers").index(j).key("name"), &prov.name, 1);
        }
        e.duration_min_1ms(&mp.key("reportingInterval"), m.reporting_interval.as_ref());
        for (j, o) in m.overrides.iter().enumerate() {
            let op = mp.key("overrides").index(j);
            if let Some(sel) = &o.r#match {
                if sel.metric.is_some() && sel.custom_metric.is_some() {
                    e.add(
                        &op.key("match"),
                        "only one of metric or customMetric can be set",
                    );
                }
                if let Some(c) = &sel.custom_metric {
                    e.min_len(&op.key("match").key("customMetric"), c, 1);
                }
            }
            for (tag, to) in &o.tag_overrides {
                let tp = op.key("tagOverrides").key(tag);
                match to.operation {
                    // UPSERT is the default operation.
                    None | Some(TagOperation::Upsert) => {
                        if to.value.as_deref().unwrap_or("").is_empty() {
                            e.add(&tp, "value must be set when operation is UPSERT");
                        }
                    }
                    Some(TagOperation::Remove) => {
                        if to.value.is_some() {
                            e.add(&tp, "value must not be set when operation is REMOVE");
                        }
                    }
                }
            }
        }
    }
    for (i, a) in t.access_logging.iter().enumerate() {
        let ap = p.key("accessLogging").index(i);
        for (j, prov) in a.providers.iter().enumerate() {
            e.min_len(&ap.key("providers").index(j).key("name"), &prov.name, 1);
        }
    }
}

pub(super) fn wasm_plugin(w: &WasmPlugin, p: &FieldPath, e: &mut Errors) {
    e.policy_targets(
        p,
        w.selector.as_ref(),
        w.target_ref.as_ref(),
        &w.target_refs,
    );
    let up = p.key("url");
    e.min_len(&up, &w.url, 1);
    if !w.url.is_empty() {
        const SCHEMES: &[&str] = &["http", "https", "oci", "file"];
        let ok = match url_scheme(&w.url) {
            Ok(None) => true,
            Ok(Some(s)) => SCHEMES.contains(&s.as_str()),
            Err(()) => false,
        };
        if !ok {
            e.add(&up, "url must have schema one of [http, https, file, oci]");
        }
    }
    if let Some(sha) = w.sha256.as_deref() {
        e.pattern(&p.key("sha256"), sha, &SHA256, "(^$|^[a-f0-9]{64}$)");
    }
    if let Some(s) = w.image_pull_secret.as_deref() {
        e.min_len(&p.key("imagePullSecret"), s, 1);
        e.max_len(&p.key("imagePullSecret"), s, 253);
    }
    if let Some(s) = w.plugin_name.as_deref() {
        e.min_len(&p.key("pluginName"), s, 1);
        e.max_len(&p.key("pluginName"), s, 256);
    }
    if let Some(vm) = &w.vm_config {
        let ep = p.key("vmConfig").key("env");
        e.max_items(&ep, &vm.env, 256);
        let mut names = BTreeSet::new();
        for (i, env) in vm.env.iter().enumerate() {
            let vp = ep.index(i);
            e.min_len(&vp.key("name"), &env.name, 1);
            e.max_len(&vp.key("name"), &env.name, 256);
            if !names.insert(env.name.as_str()) {
                e.add(&vp, format!("Duplicate value: {{\"name\":{:?}}}", env.name));
            }
            if let Some(v) = &env.value {
                e.max_len(&vp.key("value"), v, 2048);
                if env.value_from == Some(EnvValueSource::Host) {
                    e.add(&vp, "value may only be set when valueFrom is INLINE");
                }
            }
        }
    }
    for (i, sel) in w.r#match.iter().enumerate() {
        let sp = p.key("match").index(i).key("ports");
        let mut numbers = BTreeSet::new();
        for (j, port) in sel.ports.iter().enumerate() {
            let pp = sp.index(j).key("number");
            if port.number == 0 || port.number > 65535 {
                e.add(
                    &pp,
                    format!(
                        "Invalid value: {}: should be in range [1, 65535]",
                        port.number
                    ),
                );
            }
            if !numbers.insert(port.number) {
                e.add(
                    &sp.index(j),
                    format!("Duplicate value: {{\"number\":{}}}", port.number),
                );
            }
        }
    }
}

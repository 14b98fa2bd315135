//! The deployment files in `deploy/` against the settings the binary really accepts:
//! the Kubernetes config loads and validates, every `SHOPCUE__…` variable that the
//! Deployments, compose file and Dockerfile set is a key the settings take (an unknown one
//! fails to load: the settings deny unknown fields), every file the kustomization names
//! exists, and the fleet is wired as intended: analysers hold leases, edges analyse
//! nothing, and no resource is a static channel group any more. No YAML crate: the few
//! lines needed are read by hand; when Python's `yaml` module is there, every YAML file is
//! also parsed by it (and `kubectl kustomize` renders the base when kubectl is there).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use shopcue::config::Settings;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s(file: &str) -> PathBuf {
    root().join("deploy/k8s").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where an environment variable of a container gets its value.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Literal(String),
    Secret {
        name: String,
        key: String,
    },
    /// The downward API: `valueFrom.fieldRef.fieldPath`.
    Field(String),
}

/// The two Deployments, in file order.
const ANALYSER: &str = "shopcue-analyser";
const EDGE: &str = "shopcue-edge";

/// `(Deployment name, [(variable, source)])` for each Deployment of a multi-document file.
fn deployments_env(yaml: &str) -> Vec<(String, Vec<(String, Source)>)> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for doc in yaml.split("\n---") {
        if !doc.lines().any(|l| l.trim() == "kind: Deployment") {
            continue;
        }
        let name = doc
            .lines()
            .find_map(|l| l.strip_prefix("  name: "))
            .expect("a Deployment has metadata.name")
            .trim()
            .to_string();
        let lines: Vec<&str> = doc
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .collect();
        let mut env = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if lines[i].trim() != "env:" {
                i += 1;
                continue;
            }
            let list_indent = indent(lines[i]);
            i += 1;
            // The list: `- name: VAR` items, each with the lines indented below it.
            while i < lines.len() && indent(lines[i]) > list_indent {
                let item_indent = indent(lines[i]);
                let var = lines[i]
                    .trim()
                    .strip_prefix("- name: ")
                    .unwrap_or_else(|| panic!("{name}: unexpected env line {}", lines[i]))
                    .trim()
                    .to_string();
                let mut block = Vec::new();
                i += 1;
                while i < lines.len() && indent(lines[i]) > item_indent {
                    block.push(lines[i].trim());
                    i += 1;
                }
                let field = |k: &str| {
                    block
                        .iter()
                        .find_map(|l| l.strip_prefix(k))
                        .map(|v| v.trim().trim_matches('"').to_string())
                };
                let source = if let Some(v) = field("value: ") {
                    Source::Literal(v)
                } else if block.contains(&"secretKeyRef:") {
                    Source::Secret {
                        name: field("name: ").expect("secretKeyRef.name"),
                        key: field("key: ").expect("secretKeyRef.key"),
                    }
                } else if block.contains(&"fieldRef:") {
                    Source::Field(field("fieldPath: ").expect("fieldRef.fieldPath"))
                } else {
                    panic!("{name}: env {var} has neither value nor a known valueFrom");
                };
                env.push((var, source));
            }
        }
        out.push((name, env));
    }
    out
}

/// The files kustomization.yaml names: the uncommented items of `resources:`, and of the
/// `files:` lists of its generators (`key=path` items give the path).
fn kustomize_files(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut section, mut in_files) = ("", false);
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('-') {
            section = t.split(':').next().unwrap_or_default();
            in_files = false;
        } else if t == "files:" {
            in_files = true;
        } else if t.starts_with("- name:") || (t.ends_with(':') && !t.starts_with('-')) {
            in_files = false;
        } else if let Some(item) = t.strip_prefix("- ")
            && (section == "resources" || (section == "configMapGenerator" && in_files))
        {
            let path = item.split_once('=').map_or(item, |(_, p)| p);
            out.push(path.trim().to_string());
        }
    }
    out
}

/// A pod name as a Deployment makes them (`<deployment>-<pod-template-hash>-<5>`).
fn sample_pod_name(deployment: &str) -> String {
    format!("{deployment}-5d8f7c9b6-x2k4q")
}

/// Sample values for what the Secret and the downward API give `deployment`'s pods.
fn resolve(deployment: &str, source: &Source) -> String {
    match source {
        Source::Literal(v) => v.clone(),
        Source::Secret { name, key } => match (name.as_str(), key.as_str()) {
            ("shopcue-secrets", "admin-key") => "k8s-test-admin-key-0123456789".into(),
            ("shopcue-secrets", "redis-url") => "redis://shopcue-redis:6379/0".into(),
            other => panic!("Secret key {other:?} is not one deployment.yaml documents"),
        },
        Source::Field(path) => match path.as_str() {
            "metadata.name" => sample_pod_name(deployment),
            other => panic!("{deployment}: downward API field {other} not expected"),
        },
    }
}

/// The literal value `deployment` gives `var`, if any.
fn literal<'a>(env: &'a [(String, Source)], var: &str) -> Option<&'a str> {
    env.iter().find_map(|(v, s)| match s {
        Source::Literal(value) if v == var => Some(value.as_str()),
        _ => None,
    })
}

#[test]
fn k8s_config_loads_and_validates() {
    let s = Settings::load(Some(k8s("shopcue.toml").as_path()), Vec::new()).expect("shopcue.toml");
    assert_eq!(s.server.listen, "0.0.0.0:8080");
    assert_eq!(s.inference.models_dir, "/models");
    assert_eq!(s.inference.providers, ["cpu"]);
    assert_eq!(s.log.format, "json");
    // The fleet, the registry store and the catalog come per Deployment: the shared file
    // alone joins no fleet and loads no catalog. Channels are managed through the API; the
    // seed is empty.
    assert!(s.channels.is_empty());
    assert!(s.catalog.dir.is_empty());
    assert!(s.redis.url.is_empty());
    assert!(s.registry.store.is_empty());
    assert!(!s.fleet.leases);
    assert!(s.fleet.pod.is_empty());
    // docs/deploy.md's failover time (lease + a third of it) assumes the default lease.
    assert_eq!(s.fleet.lease_ms, 10_000);
    assert_eq!(s.fleet.capacity, 0);
}

#[test]
fn deployment_env_vars_are_settings_keys() {
    let file = k8s("shopcue.toml");
    let deployments = deployments_env(&read(&k8s("deployment.yaml")));
    let names: Vec<&str> = deployments.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [ANALYSER, EDGE]);
    for (deployment, env) in &deployments {
        let vars: Vec<&str> = env.iter().map(|(v, _)| v.as_str()).collect();
        for needed in [
            "SHOPCUE__SERVER__ADMIN_KEY",
            "SHOPCUE__REDIS__URL",
            "SHOPCUE__REGISTRY__STORE",
            "SHOPCUE__FLEET__LEASES",
            "SHOPCUE__FLEET__POD",
            "SHOPCUE__CATALOG__DIR",
        ] {
            assert!(vars.contains(&needed), "{deployment} lacks {needed}");
        }
        let mut sorted = vars.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            vars.len(),
            "{deployment} sets a variable twice"
        );
        let config = env
            .iter()
            .find(|(v, _)| v == "SHOPCUE_CONFIG")
            .map(|(_, s)| resolve(deployment, s));
        assert_eq!(
            config.as_deref(),
            Some("/etc/shopcue/shopcue.toml"),
            "{deployment}: SHOPCUE_CONFIG must name the mounted ConfigMap's file"
        );
        let pairs: Vec<(String, String)> = env
            .iter()
            .filter(|(v, _)| v.starts_with(shopcue::config::ENV_PREFIX))
            .map(|(v, s)| (v.clone(), resolve(deployment, s)))
            .collect();
        let s = Settings::load(Some(file.as_path()), pairs.clone())
            .unwrap_or_else(|e| panic!("{deployment} with {pairs:?}: {e}"));
        assert_eq!(s.server.admin_key, "k8s-test-admin-key-0123456789");
        assert_eq!(s.redis.url, "redis://shopcue-redis:6379/0");
        assert_eq!(
            s.catalog.dir, "/catalog",
            "{deployment}: the shared catalog"
        );
        assert!(
            s.channels.is_empty(),
            "{deployment}: channels come from the registry"
        );
    }
    // The check has teeth: a misspelt key is refused.
    let typo = [(
        "SHOPCUE__REDIS__URLS".to_string(),
        "redis://x:6379".to_string(),
    )];
    assert!(Settings::load(Some(file.as_path()), typo).is_err());
}

/// Analysers hold leases on the Redis registry, each under its pod's name; edges are in
/// the fleet (leases on: without them a process runs every channel of the Redis registry)
/// but analyse nothing.
#[test]
fn deployments_set_the_fleet_variables_as_intended() {
    let file = k8s("shopcue.toml");
    for (deployment, env) in deployments_env(&read(&k8s("deployment.yaml"))) {
        assert_eq!(
            literal(&env, "SHOPCUE__REGISTRY__STORE"),
            Some("redis"),
            "{deployment}"
        );
        assert_eq!(
            literal(&env, "SHOPCUE__FLEET__LEASES"),
            Some("true"),
            "{deployment}"
        );
        let pod = env.iter().find(|(v, _)| v == "SHOPCUE__FLEET__POD");
        assert_eq!(
            pod.map(|(_, s)| s),
            Some(&Source::Field("metadata.name".into())),
            "{deployment}: the fleet name is the pod's name (downward API)"
        );
        let analyse = literal(&env, "SHOPCUE__FLEET__ANALYSE");
        let pairs: Vec<(String, String)> = env
            .iter()
            .filter(|(v, _)| v.starts_with(shopcue::config::ENV_PREFIX))
            .map(|(v, s)| (v.clone(), resolve(&deployment, s)))
            .collect();
        let s = Settings::load(Some(file.as_path()), pairs).expect("loads");
        assert_eq!(s.registry.store, shopcue::registry::STORE_REDIS);
        assert!(s.fleet.leases, "{deployment}");
        assert_eq!(s.fleet.pod, sample_pod_name(&deployment));
        match deployment.as_str() {
            ANALYSER => {
                assert_eq!(analyse, None, "analysers analyse (the default)");
                assert!(s.fleet.analyse);
            }
            EDGE => {
                assert_eq!(analyse, Some("false"));
                assert!(!s.fleet.analyse);
            }
            other => panic!("unexpected Deployment {other}"),
        }
    }
    // The longest name a Deployment gives a pod (63 characters) is a valid fleet.pod.
    let long = [
        ("SHOPCUE__REGISTRY__STORE".to_string(), "redis".to_string()),
        ("SHOPCUE__FLEET__LEASES".to_string(), "true".to_string()),
        ("SHOPCUE__FLEET__POD".to_string(), "a".repeat(57) + "-x2k4q"),
        (
            "SHOPCUE__REDIS__URL".to_string(),
            "redis://shopcue-redis:6379/0".to_string(),
        ),
    ];
    Settings::load(Some(file.as_path()), long).expect("a 63-character pod name");
}

/// Static channel groups are gone: no resource, claim, ConfigMap, label or generated file
/// is named after a group; the only keys with "group" in them are the security context's.
#[test]
fn no_resource_is_a_channel_group() {
    let dir = root().join("deploy/k8s");
    for entry in std::fs::read_dir(&dir).expect("deploy/k8s") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains("group"), "{name}");
        for (n, line) in read(&path).lines().enumerate() {
            let t = line.trim();
            if t.starts_with('#') || !t.to_ascii_lowercase().contains("group") {
                continue;
            }
            let key = t.split(':').next().unwrap_or_default().trim();
            assert!(
                ["runAsGroup", "fsGroup"].contains(&key),
                "{name}:{}: {t}",
                n + 1
            );
        }
    }
    // Rendered, when kubectl is here: the resources the base makes.
    let Ok(out) = Command::new("kubectl")
        .args(["kustomize"])
        .arg(&dir)
        .output()
    else {
        common::peer_missing(
            "no_resource_is_a_channel_group",
            "kubectl not found: the rendered base (kubectl kustomize) is not checked",
        );
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut made: Vec<String> = Vec::new();
    for doc in text.split("\n---") {
        let kind = doc.lines().find_map(|l| l.strip_prefix("kind: "));
        let name = doc.lines().find_map(|l| l.strip_prefix("  name: "));
        if let (Some(kind), Some(name)) = (kind, name) {
            assert!(!name.contains("group"), "{kind} {name}");
            let name = name
                .split_once("shopcue-config-")
                .map_or(name, |_| "shopcue-config");
            made.push(format!("{kind} {name}"));
        }
    }
    made.sort();
    assert_eq!(
        made,
        [
            "ConfigMap shopcue-config",
            "Deployment shopcue-analyser",
            "Deployment shopcue-edge",
            "HorizontalPodAutoscaler shopcue-analyser",
            "HorizontalPodAutoscaler shopcue-edge",
            "PersistentVolumeClaim shopcue-catalog",
            "PersistentVolumeClaim shopcue-models",
            "PodDisruptionBudget shopcue-analyser",
            "PodDisruptionBudget shopcue-edge",
            "Service shopcue-admin",
            "Service shopcue-edge",
            "Service shopcue-redis",
            "StatefulSet shopcue-redis",
        ]
    );
}

#[test]
fn deployments_shut_down_gracefully_and_probe_real_routes() {
    let text = read(&k8s("deployment.yaml"));
    let pvcs = read(&k8s("pvc.yaml"));
    for doc in text
        .split("\n---")
        .filter(|d| d.contains("kind: Deployment"))
    {
        let name = doc
            .lines()
            .find_map(|l| l.strip_prefix("  name: "))
            .expect("metadata.name")
            .trim();
        let grace: u64 = doc
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
            .expect("terminationGracePeriodSeconds")
            .parse()
            .expect("a number");
        // preStop 5 s, then the sidecar's own bounds (src/sidecar/mod.rs, shutdown):
        // channels drain 15 s (analysers only), bus flush 3 s, server 10 s; the lease
        // release in between is a Redis call per held channel.
        let needed = if name == ANALYSER {
            5 + 15 + 3 + 10
        } else {
            5 + 3 + 10
        };
        assert!(
            grace > needed,
            "{name}: grace period {grace} s <= {needed} s"
        );
        assert!(doc.contains("preStop:") && doc.contains(r#"command: ["sleep", "5"]"#));
        for probe in ["startupProbe:", "livenessProbe:", "readinessProbe:"] {
            assert!(doc.contains(probe), "missing {probe}");
        }
        for path in doc.lines().filter_map(|l| l.trim().strip_prefix("path: ")) {
            assert!(["/healthz", "/readyz"].contains(&path), "probe path {path}");
        }
        // Every PVC a pod mounts is declared in pvc.yaml; every pod mounts the one
        // shared catalog and the models.
        let claims: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.trim().strip_prefix("claimName: "))
            .collect();
        assert_eq!(claims, ["shopcue-models", "shopcue-catalog"], "{name}");
        for claim in claims {
            assert!(pvcs.contains(&format!("name: {claim}\n")), "no PVC {claim}");
        }
        // The catalog is written by analysers only (the admin API); edges read it.
        let catalog_mount = doc
            .split("- name: catalog\n")
            .nth(1)
            .expect("a catalog mount")
            .lines()
            .take_while(|l| !l.trim_start().starts_with("- "))
            .any(|l| l.trim() == "readOnly: true");
        assert_eq!(
            catalog_mount,
            name == EDGE,
            "{name}: catalog mount read-only"
        );
    }
    // One catalog for the fleet, on a volume every node can mount read-write.
    let catalog = pvcs
        .split("\n---")
        .find(|d| d.contains("name: shopcue-catalog\n"))
        .expect("the shopcue-catalog PVC");
    assert!(
        catalog.contains(r#"accessModes: ["ReadWriteMany"]"#),
        "{catalog}"
    );
    for file in ["Dockerfile", "Dockerfile.prebuilt"] {
        let docker = read(&root().join("deploy/docker").join(file));
        assert!(docker.contains("http://127.0.0.1:8080/healthz"), "{file}");
        assert!(
            docker.contains(r#"ENTRYPOINT ["shopcue", "run"]"#),
            "{file}"
        );
        assert!(docker.contains("USER 10001:10001"), "{file}");
    }
}

/// compose.yaml's `SHOPCUE__KEY: value` lines by where they are: `x-shopcue` (the
/// environment every shopcue service merges, `<<: *shopcue-env`) or a service's name.
/// `${VAR...}` references get a sample value.
fn compose_env(text: &str) -> Vec<(String, String, String)> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut top, mut service) = (String::new(), String::new());
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let key = t.split(':').next().unwrap_or_default().to_string();
        match indent(line) {
            0 => (top, service) = (key, String::new()),
            2 if top == "services" => service = key,
            _ => {}
        }
        if let Some((k, v)) = t.split_once(": ")
            && k.starts_with("SHOPCUE__")
        {
            let v = v.trim().trim_matches('\'').trim_matches('"');
            let v = if v.starts_with("${") {
                "compose-sample-value"
            } else {
                v
            };
            let at = if service.is_empty() { &top } else { &service };
            out.push((at.clone(), k.to_string(), v.to_string()));
        }
    }
    out
}

/// The `SHOPCUE__KEY=value` pairs of a Dockerfile's ENV lines in deploy/docker/.
fn dockerfile_env(file: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for line in read(&root().join("deploy/docker").join(file)).lines() {
        let t = line
            .trim()
            .trim_start_matches("ENV ")
            .trim_end_matches('\\');
        if let Some((k, v)) = t.trim().split_once('=')
            && k.starts_with("SHOPCUE__")
        {
            let v = v.trim().replace("${ORT_VERSION}", "1.31.1");
            env.push((k.to_string(), v));
        }
    }
    env
}

#[test]
fn compose_and_dockerfile_env_vars_are_settings_keys() {
    let compose = compose_env(&read(&root().join("deploy/docker/compose.yaml")));
    let places: std::collections::BTreeSet<&str> =
        compose.iter().map(|(at, _, _)| at.as_str()).collect();
    assert_eq!(
        places.into_iter().collect::<Vec<_>>(),
        ["shopcue-analyser", "shopcue-edge", "x-shopcue"]
    );
    // Dockerfile: `SHOPCUE__KEY=value` in ENV; the image built from the host's binary
    // (Dockerfile.prebuilt, scripts/docker-image.sh) runs with the same environment.
    let docker = dockerfile_env("Dockerfile");
    assert_eq!(docker, dockerfile_env("Dockerfile.prebuilt"));
    for key in ["SHOPCUE__SERVER__LISTEN", "SHOPCUE__INFERENCE__MODELS_DIR"] {
        assert!(
            docker.iter().any(|(k, _)| k == key),
            "Dockerfile {key} not found: {docker:?}"
        );
    }
    // Each alone over the shipped config (the image reads config/shopcue.toml).
    let shipped = root().join("config/shopcue.toml");
    for (k, v) in &docker {
        Settings::load(Some(shipped.as_path()), [(k.clone(), v.clone())])
            .unwrap_or_else(|e| panic!("Dockerfile {k}={v}: {e}"));
    }
    // Each compose service's whole environment (the shared one, then its own) over the
    // shipped config: an unknown key fails, and the fleet is wired as intended.
    let service = |name: &str| -> Settings {
        let env: Vec<(String, String)> = compose
            .iter()
            .filter(|(at, _, _)| at == "x-shopcue" || at == name)
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        Settings::load(Some(shipped.as_path()), env.clone())
            .unwrap_or_else(|e| panic!("compose {name} with {env:?}: {e}"))
    };
    let analyser = service("shopcue-analyser");
    assert_eq!(analyser.redis.url, "redis://redis:6379/0");
    assert_eq!(analyser.registry.store, shopcue::registry::STORE_REDIS);
    assert!(analyser.fleet.leases && analyser.fleet.analyse);
    // The registry's seed is a real channel list.
    assert_eq!(analyser.channels.len(), 1, "{:?}", analyser.channels);
    assert_eq!(
        analyser.channels[0].url,
        "http://origin:8081/live/master.m3u8"
    );
    assert_eq!(analyser.catalog.dir, "/catalog");
    let edge = service("shopcue-edge");
    assert_eq!(edge.registry.store, shopcue::registry::STORE_REDIS);
    assert!(
        edge.fleet.leases,
        "without leases an edge runs every channel"
    );
    assert!(!edge.fleet.analyse);
    assert!(edge.channels.is_empty());
}

#[test]
fn kustomization_names_existing_files() {
    let text = read(&k8s("kustomization.yaml"));
    let files = kustomize_files(&text);
    for expected in [
        "deployment.yaml",
        "service.yaml",
        "redis.yaml",
        "pvc.yaml",
        "pdb.yaml",
        "hpa.yaml",
        "shopcue.toml",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} not in {files:?}"
        );
    }
    // podmonitor.yaml is named in a comment (it needs the Prometheus Operator's CRD).
    assert!(text.contains("# - podmonitor.yaml"));
    for f in files.iter().map(String::as_str).chain(["podmonitor.yaml"]) {
        assert!(
            k8s(f).is_file(),
            "kustomization.yaml names {f}, which is missing"
        );
    }
    // And the other way: every file of deploy/k8s is used (no stale group file left).
    for entry in std::fs::read_dir(root().join("deploy/k8s")).expect("deploy/k8s") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        assert!(
            name == "kustomization.yaml" || name == "podmonitor.yaml" || files.contains(&name),
            "deploy/k8s/{name} is not in kustomization.yaml"
        );
    }
}

#[test]
fn yaml_files_parse_when_python_yaml_is_available() {
    let have_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_yaml {
        common::peer_missing(
            "yaml_files_parse_when_python_yaml_is_available",
            "python3 cannot import yaml (scripts/setup.sh test installs python3-yaml)",
        );
        return;
    }
    let mut paths = vec![root().join("deploy/docker/compose.yaml")];
    for entry in std::fs::read_dir(root().join("deploy/k8s")).expect("deploy/k8s") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "yaml") {
            paths.push(p);
        }
    }
    assert!(paths.len() >= 9, "{paths:?}");
    let script = "import sys, yaml\n\
                  for p in sys.argv[1:]:\n\
                  \x20   docs = [d for d in yaml.safe_load_all(open(p)) if d is not None]\n\
                  \x20   assert docs, p\n\
                  \x20   for d in docs:\n\
                  \x20       assert isinstance(d, dict), p\n\
                  print('ok', len(sys.argv) - 1)\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&paths)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! kubectl against the API server double: get, apply, label, delete and
//! `get -w`. Skips (saying so) when no kubectl is installed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use weave_k8s_apiserver::{ApiServer, Config, kubeconfig};

fn kubectl_path() -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", "command -v kubectl"])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!path.is_empty()).then_some(path)
}

struct Kubectl {
    path: String,
    config: std::path::PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.path);
        c.env("KUBECONFIG", &self.config).args(args);
        c
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> (bool, String, String) {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(input) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().expect("kubectl ends");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str], input: Option<&str>) -> String {
        let (ok, out, err) = self.run(args, input);
        assert!(ok, "kubectl {args:?} failed: {err}{out}");
        out
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: c
    image: pause
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_apply_label_watch_delete() {
    let Some(path) = kubectl_path() else {
        eprintln!("SKIPPED: no kubectl on PATH (setup installs Debian's kubernetes-client)");
        return;
    };
    let server =
        ApiServer::bind("127.0.0.1:0".parse().expect("addr"), Config::default()).expect("binds");
    let dir = std::env::temp_dir().join(format!("weave-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("kubeconfig");
    std::fs::write(&config, kubeconfig(&server.url())).expect("kubeconfig");
    let k = Kubectl { path, config };
    let k = tokio::task::spawn_blocking(move || {
        let ns = k.ok(&["get", "namespaces", "-o", "name"], None);
        assert!(ns.contains("namespace/kube-system"), "{ns}");
        assert!(
            k.ok(&["apply", "-f", "-"], Some(POD))
                .contains("pod/web created")
        );
        assert!(k.ok(&["apply", "-f", "-"], Some(POD)).contains("unchanged"));
        let changed = POD.replace("image: pause", "image: pause2");
        assert!(
            k.ok(&["apply", "-f", "-"], Some(&changed))
                .contains("configured")
        );
        // A watch sees the label change.
        let watch = k
            .cmd(&[
                "get",
                "pods",
                "-w",
                "-o",
                "json",
                "--output-watch-events",
                "--request-timeout=6s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("watch");
        std::thread::sleep(Duration::from_millis(1500));
        k.ok(&["label", "pod", "web", "tier=front"], None);
        let labels = k.ok(
            &[
                "get",
                "pod",
                "web",
                "-o",
                "jsonpath={.metadata.labels.tier}/{.spec.containers[0].image}",
            ],
            None,
        );
        assert_eq!(labels, "front/pause2");
        let (ok, _, err) = k.run(&["label", "pod", "web", "tier=back"], None);
        assert!(!ok && err.contains("already has a value"), "{err}");
        assert!(k.ok(&["delete", "pod", "web"], None).contains("deleted"));
        let (ok, _, err) = k.run(&["get", "pod", "web"], None);
        assert!(!ok && err.contains("NotFound"), "{err}");
        let out = watch.wait_with_output().expect("watch ends");
        let events = String::from_utf8_lossy(&out.stdout).into_owned();
        for want in ["ADDED", "MODIFIED", "DELETED"] {
            assert!(
                events.contains(want),
                "{want} missing from watch output:\n{events}"
            );
        }
        // Invalid objects are refused with the server's 422.
        let bad = POD.replace("name: web", "name: Web_1");
        let (ok, _, err) = k.run(&["apply", "-f", "-"], Some(&bad));
        assert!(!ok && err.contains("is invalid"), "{err}");
        k
    })
    .await
    .expect("kubectl steps");
    let _ = std::fs::remove_dir_all(k.config.parent().unwrap_or(&dir));
}

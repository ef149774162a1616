//! Host-namespace tests of netlab itself: traffic between hosts, processes
//! and cleanup. They need root and no kernel module beyond veth and bridge.

use std::path::Path;
use std::time::Duration;

use weave_tests::{Lab, LabBuilder, wait_for};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
fn netns_two_hosts_exchange_traffic() -> anyhow::Result<()> {
    let lab = Lab::new(2)?;
    let (a, b) = (lab.host(0), lab.host(1));
    let out = a.run(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        &b.underlay_ip().to_string(),
    ])?;
    assert!(
        out.stdout.contains("3 received"),
        "ping output: {}",
        out.stdout
    );

    // A TCP transfer: b listens with a tiny shell server, a connects.
    let server = b.spawn(
        "server",
        &["sh", "-c", "exec python3 -c \"import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',7000));s.listen(1)\nc,_=s.accept();n=0\nwhile True:\n d=c.recv(65536)\n if not d: break\n n+=len(d)\nprint('received',n,flush=True)\""],
    )?;
    wait_for(Duration::from_secs(10), "the server to listen", || {
        Ok(b.run(&["ss", "-ltn", "sport = :7000"])?
            .stdout
            .contains("7000"))
    })?;
    let script = format!(
        "import socket\ns=socket.create_connection(('{}',7000))\ns.sendall(b'x'*1048576)\ns.close()",
        b.underlay_ip()
    );
    a.run(&["python3", "-c", &script])?;
    wait_for(
        Duration::from_secs(10),
        "the server to count the bytes",
        || Ok(server.log().contains("received 1048576")),
    )?;
    Ok(())
}

#[test]
fn netns_hosts_see_only_their_own_links() -> anyhow::Result<()> {
    let lab = LabBuilder::new(3).mtu(1400).build()?;
    for host in lab.hosts() {
        let links = host.run(&["ip", "-o", "link", "show"])?.stdout;
        assert_eq!(links.lines().count(), 2, "lo and eth0 only, got:\n{links}");
        assert!(links.contains("mtu 1400"), "{links}");
        let addr = host
            .run(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"])?
            .stdout;
        assert!(
            addr.contains(&format!("{}/24", host.underlay_ip())),
            "{addr}"
        );
    }
    Ok(())
}

#[test]
fn netns_lab_cleans_up_processes_and_namespaces() -> anyhow::Result<()> {
    let lab = Lab::new(1)?;
    let names: Vec<String> = vec![format!("{}-hub", lab.id()), lab.host(0).netns().to_string()];
    let extra = lab.add_netns("c1")?;
    lab.connect(lab.host(0).netns(), "vc1", &extra, "eth0")?;
    let sleeper = lab.host(0).spawn("sleeper", &["sleep", "1000"])?;
    let pid = sleeper.pid();
    // Leak the Process handle: the lab must still kill what runs inside.
    std::mem::forget(sleeper);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(lab);
    for name in names.iter().chain([&extra]) {
        assert!(!netns_exists(name), "{name} left behind");
    }
    // The killed sleeper is a zombie child of ours until reaped.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status.is_empty() || status.contains("zombie"),
        "sleeper still running: {status}"
    );
    Ok(())
}

#[test]
fn netns_lab_cleans_up_after_a_panic() -> anyhow::Result<()> {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new(2).expect("lab");
        names
            .lock()
            .expect("lock")
            .extend(lab.hosts().iter().map(|h| h.netns().to_string()));
        panic!("a failing test");
    });
    assert!(result.is_err());
    let names = names.into_inner().expect("lock");
    assert_eq!(names.len(), 2);
    for name in &names {
        assert!(!netns_exists(name), "{name} left behind after a panic");
    }
    Ok(())
}

#[test]
fn netns_wait_for_reports_the_last_error() {
    let error = wait_for(Duration::from_millis(100), "the impossible", || {
        anyhow::bail!("still impossible")
    })
    .expect_err("must time out");
    let text = format!("{error:#}");
    assert!(
        text.contains("the impossible") && text.contains("still impossible"),
        "{text}"
    );
}

//! The deployment artifacts, exercised: the systemd unit (verified by
//! systemd-analyze, and the agent run with exactly its capabilities) and
//! the container image run under Debian's Docker with exactly the security
//! context and mounts deploy/kubernetes/daemonset.yaml declares.
use std::{
    collections::BTreeSet,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_testkit::{
    docker::Dockerd,
    metrics::{free_port, scrape, served_addr},
    recorder::{oom_victim, postmortems},
    root::as_root,
    *,
};
use serde_norway::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn unit() -> String {
    fs::read_to_string(repo().join("deploy/systemd/memtrace.service")).unwrap()
}

/// The values of `key=` lines in the unit.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(String::from))
        .collect()
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no systemd-analyze on this host: unit not verified");
        return;
    }
    // Its ExecStart pointed at the binary under test (verify checks that
    // the command exists).
    let dir = scratch("deploy-unit");
    let path = dir.join("memtrace.service");
    fs::write(
        &path,
        unit().replace("/usr/local/bin/memtrace", memtrace_bin()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The hardening the agent is documented to run under.
    let u = unit();
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=memtrace",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=no",
    ] {
        assert!(u.lines().any(|l| l == line), "unit lacks {line}");
    }
}

#[test]
#[ignore = "needs root: loads BPF programs, OOM-kills"]
fn the_agent_runs_with_exactly_the_units_capabilities() {
    let (_g, scratch) = as_root("deploy-caps");
    let u = unit();
    let caps = unit_values(&u, "CapabilityBoundingSet");
    assert_eq!(caps, unit_values(&u, "AmbientCapabilities"));
    let setpriv_caps: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let set = format!("-all,{}", setpriv_caps.join(","));
    let dir = scratch.join("out");
    let log = scratch.join("agent.log");
    let mut agent = Command::new("setpriv")
        .args([
            "--bounding-set",
            &set,
            "--inh-caps",
            &set,
            "--ambient-caps",
            &set,
        ])
        .arg("--no-new-privs")
        .arg(memtrace_bin())
        .args(["record", "--dir"])
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || fs::read_to_string(&log).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(60);
    while !read_log().contains("watching") {
        assert!(Instant::now() < end, "agent never watched: {}", read_log());
        assert!(
            agent.try_wait().unwrap().is_none(),
            "agent exited: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The process holds those capabilities and no others.
    let status = fs::read_to_string(format!("/proc/{}/status", agent.id())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .unwrap();
    let out = Command::new("capsh")
        .arg(format!("--decode={eff}"))
        .output()
        .unwrap();
    let held: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split_once('=')
        .unwrap()
        .1
        .split(',')
        .map(|c| c.to_uppercase())
        .collect();
    assert_eq!(held, caps.iter().cloned().collect::<BTreeSet<_>>());

    let memcg = TestMemcg::new("deploy-caps");
    memcg.limit_no_swap(32 << 20);
    let pid = oom_victim(&memcg.dir);
    let end = Instant::now() + Duration::from_secs(20);
    let pm = loop {
        let found = postmortems(&dir.join("oom.ndjson"))
            .into_iter()
            .find(|p| p["kill"]["victim"]["pid"] == pid && p["kill"]["before_start"] == false);
        if let Some(p) = found {
            break p;
        }
        assert!(
            Instant::now() < end,
            "no post-mortem for {pid}: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(pm["kill"]["victim_memcg"]["path"], memcg.rel.as_str());
    let page = scrape(served_addr(&read_log()).unwrap());
    assert!(page.contains("status=\"attached\""), "{page}");
    assert!(
        page.contains("memtrace_kmsg_readable 1"),
        "CAP_SYSLOG reads the kernel log: {page}"
    );
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(
        wait_timeout(&mut agent, Duration::from_secs(20)).success(),
        "{}",
        read_log()
    );
}

/// The DaemonSet's container, as `docker run` arguments: its security
/// context and hostPath mounts, read from the manifest. `host_path` maps a
/// hostPath to where this host has it (the private daemon's data root).
fn docker_args_from_manifest(
    docker_knows_bpf_caps: bool,
    host_path: impl Fn(&str) -> String,
) -> (Vec<String>, String, Vec<String>) {
    let text = fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let ds: Value = serde_norway::from_str(&text).unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    let mut args = Vec::new();
    if spec["hostPID"].as_bool() == Some(true) {
        args.push("--pid=host".to_string());
    }
    if sc["privileged"].as_bool() == Some(true) {
        args.push("--privileged".into());
    }
    if sc["allowPrivilegeEscalation"].as_bool() == Some(false) {
        args.push("--security-opt=no-new-privileges".into());
    }
    if sc["readOnlyRootFilesystem"].as_bool() == Some(true) {
        args.push("--read-only".into());
    }
    for d in sc["capabilities"]["drop"].as_sequence().unwrap() {
        args.push(format!("--cap-drop={}", d.as_str().unwrap()));
    }
    let add: Vec<&str> = sc["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for a in &add {
        // Debian's Docker 20.10 predates CAP_BPF and CAP_PERFMON ("unknown
        // capability"); the kernel grants what they allow to CAP_SYS_ADMIN
        // as well (bpf_capable(), perfmon_capable()), which the manifest
        // adds, so the container holds the same powers without them.
        if matches!(*a, "BPF" | "PERFMON") && !docker_knows_bpf_caps {
            assert!(add.contains(&"SYS_ADMIN"));
            continue;
        }
        args.push(format!("--cap-add={a}"));
    }
    let volumes = spec["volumes"].as_sequence().unwrap();
    for m in c["volumeMounts"].as_sequence().unwrap() {
        let name = m["name"].as_str().unwrap();
        let v = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap();
        let hp = v["hostPath"]["path"]
            .as_str()
            .expect("hostPath volumes only");
        // A hostPath device is a bind mount in Kubernetes too: the device
        // cgroup still decides whether it opens.
        let ro = if m["readOnly"].as_bool() == Some(true) {
            ":ro"
        } else {
            ""
        };
        args.push(format!(
            "--volume={}:{}{ro}",
            host_path(hp),
            m["mountPath"].as_str().unwrap()
        ));
    }
    let image = c["image"].as_str().unwrap().to_string();
    let cmd = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    (args, image, cmd)
}

/// Host directories a test created, removed (if still empty) on drop.
struct RemoveDirs(Vec<PathBuf>);

impl Drop for RemoveDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs::remove_dir(d);
        }
    }
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs root and the image (cargo xtask image): runs Docker, OOM-kills"]
fn the_image_runs_as_the_daemonset_declares_and_serves_an_oom_kill() {
    let (_g, scratch) = as_root("deploy-image");
    let tar = repo().join("target/image/memtrace-image.tar");
    assert!(
        tar.is_file(),
        "no {}: run `cargo xtask image` first (cargo xtask test does)",
        tar.display()
    );
    let docker = Dockerd::start(&scratch.join("docker")).unwrap();
    ok(
        docker.run(&["load", "-i", tar.to_str().unwrap()]),
        "docker load",
    );
    // A busybox image for the victim container, from a local file.
    docker.import_busybox("busybox-test:1");
    let data_root = docker.data_root();
    let state = scratch.join("state");
    let created = std::cell::RefCell::new(Vec::new());
    let knows = docker
        .run(&["create", "--cap-add=BPF", "busybox-test:1", "true"])
        .status
        .success();
    let (args, image, cmd) = docker_args_from_manifest(knows, |hp| match hp {
        "/var/lib/docker" => data_root.display().to_string(),
        "/var/lib/memtrace" => state.display().to_string(),
        other => {
            // A missing DirectoryOrCreate path is created, as the kubelet
            // does (and removed at the end).
            if !Path::new(other).exists() {
                fs::create_dir_all(other).unwrap();
                created.borrow_mut().push(PathBuf::from(other));
            }
            other.to_string()
        }
    });
    let _created = RemoveDirs(created.into_inner());
    // The pod's network is the host's here (the private daemon has no
    // bridge), so the listen address moves to a free loopback port.
    let port = free_port();
    let cmd: Vec<String> = cmd
        .into_iter()
        .map(|a| {
            if a == "0.0.0.0:9750" {
                format!("127.0.0.1:{port}")
            } else {
                a
            }
        })
        .collect();
    let mut run = vec!["run", "-d", "--name", "memtrace", "--network=host"];
    run.extend(args.iter().map(String::as_str));
    run.push(&image);
    run.extend(cmd.iter().map(String::as_str));
    let agent_id = ok(docker.run(&run), "docker run the agent");
    let agent: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let logs = || {
        let o = docker.run(&["logs", &agent_id]);
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let end = Instant::now() + Duration::from_secs(60);
    while !logs().contains("watching") {
        assert!(Instant::now() < end, "agent never watched: {}", logs());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(served_addr(&logs()).is_some(), "{}", logs());

    // A container OOM-killed on the host, under the same daemon.
    let victim = docker.run(&[
        "run",
        "--name",
        "web-1",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        "--network",
        "none",
        "busybox-test:1",
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(victim.status.code(), Some(137), "{victim:?}");
    let id = ok(
        docker.run(&["inspect", "-f", "{{.Id}}", "web-1"]),
        "inspect",
    );

    let end = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let page = scrape(agent);
        if let Some(l) = page
            .lines()
            .find(|l| l.starts_with("memtrace_oom_kills_total{") && l.contains(&id))
        {
            break l.to_string();
        }
        assert!(
            Instant::now() < end,
            "no OOM series for {id}: {page}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("{line}");
    assert!(line.ends_with(" 1"), "{line}");
    assert!(line.contains("runtime=\"docker\""), "{line}");
    assert!(
        line.contains("container=\"web-1\""),
        "named from the runtime's state: {line}"
    );
    // The post-mortem landed on the host path the manifest mounts.
    assert!(state.join("oom.ndjson").is_file());
    ok(docker.run(&["stop", "-t", "20", "memtrace"]), "docker stop");
    let code = ok(
        docker.run(&["inspect", "-f", "{{.State.ExitCode}}", "memtrace"]),
        "inspect",
    );
    assert_eq!(code, "0", "{}", logs());
}

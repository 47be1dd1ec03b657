//! The test git smart-HTTP server (`scripts/git-http-server.py` and
//! `tests/common/git_server.rs`) works with the plain git CLI and with
//! libgit2: token auth, public repos, 404s, shallow clones, fetch by sha, the
//! upload-pack delay and the request log.

mod common;

use common::git_server::{
    GitServer, ServerOptions, auth_header, bare_repo, basic_auth, requests, upload_pack_posts,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TOKEN: &str = "t0ken-4-tests";

/// Runs the git CLI as a client: no global or system config, no credential
/// helper, never a prompt. Does not check the exit status.
fn client(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(["-c", "credential.helper="])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "git failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn header_arg(token: &str) -> String {
    format!("http.extraHeader={}", auth_header(token))
}

/// One raw HTTP/1.1 GET: (status, head, body).
fn http_get(server: &GitServer, path: &str, authorization: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

#[test]
fn clones_with_the_token_in_a_header_or_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let repo = bare_repo(&root, "org/app.git", 3, 4);
    let options = ServerOptions {
        token: Some(TOKEN.into()),
        ..Default::default()
    };
    let Some(server) = GitServer::start(&root, options) else {
        return;
    };
    let url = server.repo_url(&repo.rel);

    let header = header_arg(TOKEN);
    ok(&client(
        dir.path(),
        &["-c", &header, "clone", "--quiet", &url, "a"],
    ));
    let a = dir.path().join("a");
    assert_eq!(ok(&client(&a, &["rev-parse", "HEAD"])), repo.head());
    assert_eq!(ok(&client(&a, &["rev-list", "--count", "HEAD"])), "3");
    for name in repo.file_names() {
        let text = std::fs::read_to_string(a.join(&name)).unwrap();
        assert!(text.contains("commit 3"), "{name}: {text}");
    }

    let with_credentials = url.replacen("http://", &format!("http://ci:{TOKEN}@"), 1);
    ok(&client(
        dir.path(),
        &["clone", "--quiet", &with_credentials, "b"],
    ));
    assert_eq!(
        ok(&client(&dir.path().join("b"), &["rev-parse", "HEAD"])),
        repo.head()
    );
}

#[test]
fn no_token_or_a_wrong_one_is_401_and_never_a_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let repo = bare_repo(&root, "org/app.git", 1, 1);
    let log = dir.path().join("requests.jsonl");
    let options = ServerOptions {
        token: Some(TOKEN.into()),
        log: Some(log.clone()),
        ..Default::default()
    };
    let Some(server) = GitServer::start(&root, options) else {
        return;
    };
    let url = server.repo_url(&repo.rel);

    let started = Instant::now();
    let none = client(dir.path(), &["clone", "--quiet", &url, "a"]);
    let wrong = header_arg("not-the-token");
    let wrong = client(dir.path(), &["-c", &wrong, "clone", "--quiet", &url, "b"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    for out in [&none, &wrong] {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("terminal prompts disabled"), "{stderr}");
    }
    assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
    let statuses: Vec<_> = requests(&log).iter().map(|r| r["status"].clone()).collect();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| s == 401),
        "{statuses:?}"
    );

    let path = "/org/app.git/info/refs?service=git-upload-pack";
    let (status, head, _) = http_get(&server, path, None);
    assert_eq!(status, 401);
    assert!(
        head.contains("WWW-Authenticate: Basic realm=\"git\""),
        "{head}"
    );
    assert_eq!(http_get(&server, path, Some("Bearer t0ken-4-tests")).0, 401);
    assert_eq!(http_get(&server, path, Some(&basic_auth(TOKEN))).0, 200);
}

#[test]
fn a_public_repo_clones_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let open = bare_repo(&root, "org/open.git", 2, 2);
    let closed = bare_repo(&root, "org/closed.git", 1, 1);
    let options = ServerOptions {
        token: Some(TOKEN.into()),
        public: vec!["org/open.git".into()],
        ..Default::default()
    };
    let Some(server) = GitServer::start(&root, options) else {
        return;
    };
    let url = server.repo_url(&open.rel);
    ok(&client(dir.path(), &["clone", "--quiet", &url, "open"]));
    let open_dir = dir.path().join("open");
    assert_eq!(ok(&client(&open_dir, &["rev-parse", "HEAD"])), open.head());
    let url = server.repo_url(&closed.rel);
    assert!(
        !client(dir.path(), &["clone", "--quiet", &url, "closed"])
            .status
            .success()
    );
}

#[test]
fn a_missing_repo_is_404_after_auth() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    bare_repo(&root, "org/app.git", 1, 1);
    let options = ServerOptions {
        token: Some(TOKEN.into()),
        ..Default::default()
    };
    let Some(server) = GitServer::start(&root, options) else {
        return;
    };
    let url = server.repo_url("org/missing.git");
    let header = header_arg(TOKEN);
    let out = client(dir.path(), &["-c", &header, "clone", "--quiet", &url, "m"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found"), "{stderr}");

    let path = "/org/missing.git/info/refs?service=git-upload-pack";
    assert_eq!(http_get(&server, path, None).0, 401);
    assert_eq!(http_get(&server, path, Some(&basic_auth(TOKEN))).0, 404);
    assert_eq!(
        http_get(
            &server,
            "/org/../org/app.git/HEAD",
            Some(&basic_auth(TOKEN))
        )
        .0,
        404
    );
}

#[test]
fn shallow_clone_and_refs_made_by_the_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut repo = bare_repo(&root, "org/app.git", 4, 3);
    let first = repo.shas[0].clone();
    repo.tag("v1", &first);
    let tag_object = repo.annotated_tag("v2", &repo.shas[1]);
    repo.branch("release", &repo.shas[2]);
    let bumped = repo.commit();
    assert_eq!(repo.shas.len(), 5);
    let Some(server) = GitServer::start(&root, ServerOptions::default()) else {
        return;
    };
    let url = server.repo_url(&repo.rel);

    ok(&client(
        dir.path(),
        &["clone", "--quiet", "--depth", "1", &url, "s"],
    ));
    let s = dir.path().join("s");
    assert_eq!(ok(&client(&s, &["rev-parse", "HEAD"])), bumped);
    assert_eq!(ok(&client(&s, &["rev-list", "--count", "HEAD"])), "1");
    assert!(s.join(".git/shallow").exists());
    let text = std::fs::read_to_string(s.join("file-000.txt")).unwrap();
    assert!(text.contains("commit 5"), "{text}");

    let refs = ok(&client(dir.path(), &["ls-remote", &url]));
    for line in [
        format!("{bumped}\tHEAD"),
        format!("{bumped}\trefs/heads/main"),
        format!("{}\trefs/heads/release", repo.shas[2]),
        format!("{first}\trefs/tags/v1"),
        format!("{tag_object}\trefs/tags/v2"),
        format!("{}\trefs/tags/v2^{{}}", repo.shas[1]),
    ] {
        assert!(refs.lines().any(|l| l == line), "{line} not in\n{refs}");
    }
    assert_ne!(tag_object, repo.shas[1]);
}

#[test]
fn fetch_by_sha_only_where_the_repo_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let repo = bare_repo(&root, "org/app.git", 3, 2);
    let Some(server) = GitServer::start(&root, ServerOptions::default()) else {
        return;
    };
    let url = server.repo_url(&repo.rel);
    let old = repo.shas[0].clone();
    let client_dir = dir.path().join("c");
    std::fs::create_dir(&client_dir).unwrap();
    ok(&client(&client_dir, &["init", "--quiet"]));
    // Protocol v0, as libgit2 speaks it (protocol v2 servers allow any
    // reachable sha whatever the config says).
    let fetch = |depth: bool| {
        let mut args = vec!["-c", "protocol.version=0", "fetch", "--quiet"];
        if depth {
            args.push("--depth=1");
        }
        args.extend([url.as_str(), old.as_str()]);
        client(&client_dir, &args)
    };

    let refused = fetch(false);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not our ref") || stderr.contains("unadvertised"),
        "{stderr}"
    );

    repo.allow_reachable_sha1_in_want();
    ok(&fetch(true));
    assert_eq!(ok(&client(&client_dir, &["rev-parse", "FETCH_HEAD"])), old);
    assert_eq!(
        ok(&client(&client_dir, &["cat-file", "-t", &old])),
        "commit"
    );
}

#[test]
fn the_log_shows_a_fetch_with_nothing_new_downloads_no_pack() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut repo = bare_repo(&root, "org/app.git", 2, 2);
    let log = dir.path().join("requests.jsonl");
    let options = ServerOptions {
        token: Some(TOKEN.into()),
        log: Some(log.clone()),
        ..Default::default()
    };
    let Some(server) = GitServer::start(&root, options) else {
        return;
    };
    let url = server.repo_url(&repo.rel);
    let header = header_arg(TOKEN);
    let v0 = "protocol.version=0";

    ok(&client(
        dir.path(),
        &["-c", &header, "-c", v0, "clone", "--quiet", &url, "a"],
    ));
    let first = requests(&log);
    assert_eq!(first[0]["method"], "GET");
    assert_eq!(first[0]["path"], "/org/app.git/info/refs");
    assert_eq!(first[0]["query"], "service=git-upload-pack");
    assert_eq!(first[0]["status"], 200);
    let post = first.iter().find(|r| r["method"] == "POST").unwrap();
    assert_eq!(post["path"], "/org/app.git/git-upload-pack");
    assert_eq!(post["command"], "fetch");
    assert_eq!(post["status"], 200);
    assert!(post["bytes"].as_u64().unwrap() > 100, "{post}");
    assert_eq!(upload_pack_posts(&log), 1);

    // Nothing new: the ref advertisement only, no POST.
    let a = dir.path().join("a");
    ok(&client(&a, &["-c", &header, "-c", v0, "fetch", "--quiet"]));
    assert_eq!(upload_pack_posts(&log), 1);
    assert_eq!(requests(&log).len(), first.len() + 1);

    // A ref bump downloads again.
    repo.commit();
    ok(&client(&a, &["-c", &header, "-c", v0, "fetch", "--quiet"]));
    assert_eq!(upload_pack_posts(&log), 2);
}

#[test]
fn libgit2_clones_through_the_server_with_a_delay() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let repo = bare_repo(&root, "org/app.git", 3, 3);
    let log = dir.path().join("requests.jsonl");
    let options = ServerOptions {
        token: Some(TOKEN.into()),
        delay_ms: 300,
        log: Some(log.clone()),
        ..Default::default()
    };
    let Some(server) = GitServer::start(&root, options) else {
        return;
    };

    let mut asked = 0;
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(move |_, _, _| {
        asked += 1;
        if asked > 2 {
            return Err(git2::Error::from_str("credentials refused"));
        }
        git2::Cred::userpass_plaintext("x-access-token", TOKEN)
    });
    let mut fetch = git2::FetchOptions::new();
    fetch.remote_callbacks(callbacks).depth(1);
    let started = Instant::now();
    let cloned = git2::build::RepoBuilder::new()
        .fetch_options(fetch)
        .clone(&server.repo_url(&repo.rel), &dir.path().join("c"))
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let head = cloned.head().unwrap().peel_to_commit().unwrap().id();
    assert_eq!(head.to_string(), repo.head());
    assert!(dir.path().join("c/sub/file-001.txt").exists());
    let statuses: Vec<_> = requests(&log).iter().map(|r| r["status"].clone()).collect();
    assert_eq!(statuses[0], 401, "{statuses:?}");
    // A shallow clone is two POSTs: the shallow negotiation, then the pack.
    let posts = upload_pack_posts(&log);
    assert!(posts >= 1, "{posts}");

    // Listing the remote's refs (what a re-run compares) is a GET only;
    // a libgit2 fetch with a depth POSTs again even when nothing is new.
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(|_, _, _| git2::Cred::userpass_plaintext("x", TOKEN));
    let mut remote = cloned.find_remote("origin").unwrap();
    let connection = remote
        .connect_auth(git2::Direction::Fetch, Some(callbacks), None)
        .unwrap();
    let main = connection
        .list()
        .unwrap()
        .iter()
        .find(|h| h.name() == "refs/heads/main")
        .map(|h| h.oid().to_string());
    assert_eq!(main.as_deref(), Some(repo.head()));
    drop(connection);
    assert_eq!(upload_pack_posts(&log), posts);
}

//! TCP_NODELAY on every socket that carries small messages both ways.
//!
//! Without it, the second of two small frames written back to back (a
//! `message:send` answer and `message:sent`) waits for the peer's delayed ACK,
//! ~40 ms on Linux. The test reads the option back with `getsockopt` from every
//! connected TCP socket of this process: the API's accepted client sockets, the
//! database and broker connections of the in-process api and worker, and the
//! test's own clients. It is the only test in this binary, so the sockets it
//! sees are its own (nextest runs each test in a process of its own anyway).

use std::{
    net::SocketAddr,
    os::fd::{BorrowedFd, RawFd},
};

use courier_tests::{Rest, TestEnv, WsClient};
use socket2::SockRef;

/// A connected TCP socket of this process, as `getsockname`/`getpeername`/`getsockopt` see it.
#[derive(Debug)]
struct TcpSocket {
    local: SocketAddr,
    peer: SocketAddr,
    nodelay: bool,
}

/// Every connected TCP socket open in this process right now.
fn connected_tcp_sockets() -> Vec<TcpSocket> {
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Some(fd) = entry.ok().and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok())) else { continue };
        let is_socket = std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the fd is only borrowed for three getsockopt-style calls; if
        // another thread closed it meanwhile they fail and the fd is skipped.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = SockRef::from(&fd);
        if socket.r#type().ok() != Some(socket2::Type::STREAM) {
            continue;
        }
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket()); // listeners have none
        if let (Some(local), Some(peer), Ok(nodelay)) = (local, peer, socket.tcp_nodelay()) {
            sockets.push(TcpSocket { local, peer, nodelay });
        }
    }
    sockets
}

#[tokio::test]
async fn every_connected_socket_of_api_worker_and_clients_has_tcp_nodelay() {
    let mut env = TestEnv::new().await;
    let addr = env.start_api().await;
    env.start_worker().await;
    let api_port = env.api(0).local_addr.port();
    // A node with the switch off: proves the check below can see a socket without it.
    let mut nagle_config = env.api_config();
    nagle_config.tcp_nodelay = false;
    let nagle_addr = env.start_api_with(nagle_config).await;
    let nagle_port = env.api(1).local_addr.port();

    let chat = Rest::new(&addr, Some(&env.token("alice"))).create_chat("direct", &["bob"]).await;
    let mut alice = WsClient::connect(&addr, &env.token("alice")).await.unwrap();
    let mut bob = WsClient::connect(&addr, &env.token("bob")).await.unwrap();
    let mut carol = WsClient::connect(&nagle_addr, &env.token("carol")).await.unwrap();
    alice.send_message(&chat, "over every socket kind").await;
    bob.receive_messages(1).await;
    alice.barrier().await;
    carol.barrier().await;

    let sockets = connected_tcp_sockets();
    let accepted = |port: u16| sockets.iter().filter(move |s| s.local.port() == port).collect::<Vec<_>>();
    let (served, nagle_served) = (accepted(api_port), accepted(nagle_port));
    assert!(served.len() >= 2, "alice's and bob's sockets on the api node: {sockets:#?}");
    assert!(!nagle_served.is_empty(), "carol's socket on the node without TCP_NODELAY: {sockets:#?}");
    assert!(nagle_served.iter().all(|s| !s.nodelay), "TCP_NODELAY=false is honoured: {nagle_served:#?}");
    for needed in [5432, 5672] {
        assert!(sockets.iter().any(|s| s.peer.port() == needed), "no connection to port {needed}: {sockets:#?}");
    }

    let without: Vec<&TcpSocket> = sockets.iter().filter(|s| !s.nodelay && s.local.port() != nagle_port).collect();
    assert!(without.is_empty(), "sockets without TCP_NODELAY (local -> peer): {without:#?}");

    alice.close().await;
    bob.close().await;
    carol.close().await;
    env.cleanup().await;
}

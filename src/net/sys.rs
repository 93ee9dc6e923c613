//! The relay's `send` and `recv` on plain TCP sockets as bare system calls. In a process with
//! threads, glibc's `send` and `recv` wrap each call in pthread-cancellation bookkeeping (two atomic
//! updates of the thread's state); pgsluice never cancels a thread, so on Linux it enters the kernel
//! through `syscall(2)`, which has no such wrapper. Elsewhere the libc calls stand.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// `send(2)` flags: no SIGPIPE on a peer that is gone (an error instead), whatever the process's
/// signal disposition.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// Sends what the socket takes of `buf` now; `WouldBlock` if it takes nothing.
/// What must hold: `fd` is an open, non-blocking stream socket.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
    let sent = unsafe {
        socket_call(
            libc::SYS_sendto,
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            SEND_FLAGS,
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above.
    let sent = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), SEND_FLAGS) };
    outcome(sent)
}

/// Receives into `spare` what the socket holds (at most its length); 0 at end of stream,
/// `WouldBlock` if it holds nothing. Returns how many bytes of `spare` are now initialized.
/// What must hold: `fd` is an open, non-blocking stream socket.
#[inline]
pub(crate) fn recv(fd: RawFd, spare: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: `spare` is valid for writes of `spare.len()` bytes for the whole call (the kernel
    // writes bytes, never reads them).
    let got = unsafe {
        socket_call(
            libc::SYS_recvfrom,
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            0,
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above.
    let got = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
    outcome(got)
}

/// `sendto(2)` or `recvfrom(2)` (`call`) without a peer address, which makes them `send(2)` and
/// `recv(2)`. Every argument goes as a full register, as `syscall(2)` reads them.
/// Safety: `buf` must be valid for `len` bytes of what `call` does with it: reads for `sendto`,
/// writes for `recvfrom` (a pointer from a mutable borrow).
#[cfg(target_os = "linux")]
#[inline]
unsafe fn socket_call(
    call: libc::c_long,
    fd: RawFd,
    buf: *const libc::c_void,
    len: usize,
    flags: libc::c_int,
) -> isize {
    // SAFETY: the caller vouches for `buf`; null address pointers are what these calls expect
    // without a peer address.
    unsafe {
        libc::syscall(
            call,
            fd as libc::c_long,
            buf as libc::c_long,
            len as libc::c_long,
            flags as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        ) as isize
    }
}

/// A byte count, or the error the call left in `errno`.
#[inline]
fn outcome(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn send_and_recv_move_bytes_and_report_would_block_and_end_of_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut peer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (ours, _) = listener.accept().expect("accept");
        ours.set_nonblocking(true).expect("non-blocking");
        let fd = ours.as_raw_fd();

        let mut spare = [MaybeUninit::<u8>::uninit(); 16];
        let err = recv(fd, &mut spare).expect_err("nothing to read yet");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

        assert_eq!(send(fd, b"ping").expect("send"), 4);
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).expect("peer reads");
        assert_eq!(&got, b"ping");

        peer.write_all(b"pong!").expect("peer writes");
        let n = loop {
            match recv(fd, &mut spare) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("recv: {e}"),
            }
        };
        assert_eq!(n, 5);
        // SAFETY: recv initialized the first `n` bytes.
        let read: Vec<u8> = spare[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        assert_eq!(read, b"pong!");

        drop(peer);
        let n = loop {
            match recv(fd, &mut spare) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("recv: {e}"),
            }
        };
        assert_eq!(n, 0, "end of stream");
        let err = loop {
            match send(fd, b"gone") {
                Ok(_) => std::thread::yield_now(),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "a send to a closed peer fails without SIGPIPE: {err}"
        );
    }
}

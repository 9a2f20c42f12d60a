#ifndef SPECTRA_CMOSQUITTO_SHIM_H
#define SPECTRA_CMOSQUITTO_SHIM_H
// libmosquitto's client API (MQTT 3.1.1 and 5) and its protocol constants.
#include <mosquitto.h>
#include <mqtt_protocol.h>
// The Linux readiness API the event loop drives many clients' sockets with.
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <errno.h>
#include <stddef.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/// Makes `socketpair` fail with EMFILE on the calling thread, for the rest of its life (a
/// seccomp filter; the thread also gets `no_new_privs`). Nothing else changes, on this thread
/// or any other, and no C library function is replaced.
///
/// For the one thread that creates libmosquitto handles: `mosquitto_new` opens a socket pair
/// that only libmosquitto's own loop thread (`mosquitto_loop_forever`) reads, and writes a byte
/// to it for every packet it queues. A client that drives its socket itself never reads it:
/// the writes fill it (about 200 KiB of kernel memory per client) and then fail, a wasted
/// system call per packet, and it holds two descriptors per client. Without the pair,
/// libmosquitto writes nothing.
///
/// Returns 0, or -1 with errno when the kernel refuses the filter (the pair is then made:
/// slower, not wrong).
static inline int spectra_refuse_socketpair_on_this_thread(void) {
#if defined(__x86_64__)
    const unsigned int arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    const unsigned int arch = AUDIT_ARCH_AARCH64;
#else
    errno = ENOSYS;
    return -1;
#endif
    struct sock_filter filter[] = {
        // Another architecture's system call numbers mean something else: allowed.
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socketpair, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EMFILE & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = (unsigned short)(sizeof filter / sizeof filter[0]), .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program);
}
#endif

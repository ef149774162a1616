/*
 * LD_PRELOAD shim for User-Mode Linux 6.1 on hosts with large XSAVE areas.
 *
 * UML reads and writes its processes' FPU state with PTRACE_GETREGSET and
 * PTRACE_SETREGSET on NT_X86_XSTATE, using a buffer of the size it was
 * compiled with (832 bytes: legacy area, header, AVX). A host kernel whose
 * CPU has AVX-512 or AMX refuses any length but the full XSAVE size of the
 * features the host enabled, and answers EFAULT, so stock linux.uml dies at
 * boot ("ptrace set fp regs failed, errno = 14").
 *
 * This wraps ptrace() for exactly those two requests when the caller's
 * buffer is short: a GET reads the full state into a scratch buffer and
 * hands back the caller's prefix; a SET reads the full current state, lays
 * the caller's prefix over it and writes the whole buffer. Every other call
 * goes straight through. The full size comes from CPUID leaf 0xD, sub-leaf
 * 0, EBX: the XSAVE size for the features enabled in XCR0.
 *
 * Built by `cargo xtask uml` with the machine's gcc; part of weave-rs.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

static size_t xsave_size(void)
{
	unsigned int eax, ebx, ecx, edx;
	if (!__get_cpuid_count(0xd, 0, &eax, &ebx, &ecx, &edx))
		return 0;
	return ebx;
}

long ptrace(enum __ptrace_request request, ...)
{
	static ptrace_fn real;
	va_list ap;
	pid_t pid;
	void *addr, *data;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);

	if (!real)
		real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}

	if ((request == PTRACE_GETREGSET || request == PTRACE_SETREGSET) &&
	    (unsigned long)addr == NT_X86_XSTATE && data) {
		struct iovec *iov = data;
		size_t full = xsave_size();
		if (full > iov->iov_len) {
			struct iovec whole;
			long ret;
			int saved;
			whole.iov_base = calloc(1, full);
			whole.iov_len = full;
			if (!whole.iov_base) {
				errno = ENOMEM;
				return -1;
			}
			ret = real(PTRACE_GETREGSET, pid, addr, &whole);
			if (ret == 0) {
				if (request == PTRACE_GETREGSET) {
					size_t n = iov->iov_len < whole.iov_len ?
						iov->iov_len : whole.iov_len;
					memcpy(iov->iov_base, whole.iov_base, n);
					iov->iov_len = n;
				} else {
					memcpy(whole.iov_base, iov->iov_base, iov->iov_len);
					whole.iov_len = full;
					ret = real(PTRACE_SETREGSET, pid, addr, &whole);
				}
			}
			saved = errno;
			free(whole.iov_base);
			errno = saved;
			return ret;
		}
	}
	return real(request, pid, addr, data);
}

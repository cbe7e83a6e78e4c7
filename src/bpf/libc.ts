// The shared libraries spak calls through koffi, each opened once per process: libc (the bpf
// binding's mmap/statfs, the privilege drop, doctor's adjtimex) and libbpf 1.1. Each caller binds
// the functions it needs on the handle it gets here.
import koffi, { type LibraryHandle } from 'koffi';

let libcHandle: LibraryHandle | undefined;
let libbpfHandle: LibraryHandle | undefined;

/** libc.so.6. */
export function libcLibrary(): LibraryHandle {
  libcHandle ??= koffi.load('libc.so.6');
  return libcHandle;
}

/** libbpf.so.1; throws koffi's error when it is not installed (callers say what to install). */
export function libbpfLibrary(): LibraryHandle {
  libbpfHandle ??= koffi.load('libbpf.so.1');
  return libbpfHandle;
}

# Declarations for native/src/hash.h.
from libc.stdint cimport uint64_t, uint8_t


cdef extern from "hash.h" namespace "sabot" nogil:
    const uint64_t kDefaultHashSeed
    const uint64_t kNullHash
    uint64_t xxh64(const uint8_t* data, size_t length, uint64_t seed) noexcept

# Declarations for native/src/arrow_data.h: the Arrow C Data Interface structs and our views of them.
from libc.stdint cimport int64_t
from libcpp.memory cimport shared_ptr
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native.errors cimport raise_py_error


cdef extern from "arrow_data.h" nogil:
    struct ArrowSchema:
        const char* format
        const char* name
        int64_t n_children
        void (*release)(ArrowSchema*)

    struct ArrowArray:
        int64_t length
        int64_t null_count
        void (*release)(ArrowArray*)


cdef extern from "arrow_data.h" namespace "sabot" nogil:
    cdef cppclass ColumnView:
        string name

    cdef cppclass BatchView:
        int64_t num_rows
        vector[ColumnView] columns

    cdef cppclass TableView:
        vector[BatchView] batches
        int64_t num_rows

    cdef cppclass OutputArray:
        int64_t length

    BatchView import_batch(const ArrowSchema* schema, ArrowArray* array) except +raise_py_error
    TableView make_table(vector[BatchView] batches) except +raise_py_error
    void export_array(const OutputArray& array, ArrowArray* out) except +raise_py_error

// Reading and producing Arrow memory through the Arrow C Data Interface, without linking libarrow.
//
// Input: an ArrowSchema/ArrowArray pair describing a record batch (a struct array whose children are
// the columns), as exported by pyarrow. The array is moved into a shared owner, so output arrays that
// reuse input memory (shared dictionaries) keep it alive for as long as they live.
//
// Buffers received over Arrow Flight are not guaranteed to be aligned, so every value is read through
// load_unaligned (a memcpy the compiler turns into one plain load on x86 and ARM).
//
// Output: OutputArray trees whose buffers are reference counted; export_array hands one to a consumer
// as an ArrowArray whose release callback drops those references.
#pragma once

#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

// Verbatim from the Arrow C Data Interface specification.
struct ArrowSchema {
  const char* format;
  const char* name;
  const char* metadata;
  int64_t flags;
  int64_t n_children;
  struct ArrowSchema** children;
  struct ArrowSchema* dictionary;
  void (*release)(struct ArrowSchema*);
  void* private_data;
};

struct ArrowArray {
  int64_t length;
  int64_t null_count;
  int64_t offset;
  int64_t n_buffers;
  int64_t n_children;
  const void** buffers;
  struct ArrowArray** children;
  struct ArrowArray* dictionary;
  void (*release)(struct ArrowArray*);
  void* private_data;
};

#endif  // ARROW_C_DATA_INTERFACE

namespace sabot {

template <typename T>
inline T load_unaligned(const uint8_t* address) {
  T value;
  std::memcpy(&value, address, sizeof(T));
  return value;
}

inline bool bit_is_set(const uint8_t* bits, int64_t index) {
  return (bits[index >> 3] >> (index & 7)) & 1;
}

// How a column's values are laid out in memory; the logical type only matters where it changes the
// hash (see hash.h), so temporal types are plain integers here.
enum class Layout {
  kBool,          // bit-packed values
  kSignedInt,     // 1/2/4/8-byte two's complement (also dates, times, timestamps, durations)
  kUnsignedInt,   // 1/2/4/8-byte unsigned
  kFloat32,
  kFloat64,
  kFixedBytes,    // any other fixed width: decimals, fixed_size_binary, half floats, intervals
  kBinary,        // string/binary with 32-bit offsets
  kLargeBinary,   // large_string/large_binary with 64-bit offsets
  kDictionary,    // integer indices (byte_width, index_signed) into `dictionary`
  kUnsupported,   // nested and view types: a column kernels may pass by but never read (only count
                  // reads its validity)
};

struct OutputArray;

// A read-only view of one column. Row i of the column lives at physical index offset + i of every
// buffer.
struct ColumnView {
  std::string name;
  std::string format;
  Layout layout = Layout::kFixedBytes;
  int byte_width = 0;         // fixed-width layouts and dictionary indices; 0 for var-binary and bool
  bool index_signed = false;  // dictionary indices only
  int decimal_precision = 0;  // decimals ("d:p,s[,bits]"): p, and s below; 0 for every other type
  int decimal_scale = 0;
  bool null_type = false;     // Arrow's null type: every row is null and there are no buffers
  int64_t length = 0;
  int64_t offset = 0;
  bool has_nulls = false;            // false means validity may be ignored
  const uint8_t* validity = nullptr;  // null when has_nulls is false
  const uint8_t* values = nullptr;    // fixed-width values, bool bits, var-binary bytes, dict indices
  const uint8_t* offsets = nullptr;   // var-binary offsets (int32 or int64)
  std::shared_ptr<const ColumnView> dictionary;  // dictionary values (a flat column)
  const ArrowArray* dictionary_array = nullptr;   // to share the dictionary with outputs
  // A view of an intermediate result (view_output): the shared dictionary it already carries.
  std::shared_ptr<const OutputArray> output_dictionary;
  std::shared_ptr<const void> owner;               // keeps the memory above alive

  bool is_valid(int64_t row) const { return !has_nulls || bit_is_set(validity, offset + row); }
  bool is_var_binary() const { return layout == Layout::kBinary || layout == Layout::kLargeBinary; }
  bool is_decimal128() const { return decimal_precision > 0 && byte_width == 16; }

  // Start and end byte offsets of row `row` of a var-binary column.
  int64_t value_begin(int64_t row) const {
    const int64_t index = offset + row;
    return layout == Layout::kBinary ? load_unaligned<int32_t>(offsets + 4 * index)
                                     : load_unaligned<int64_t>(offsets + 8 * index);
  }
  int64_t value_end(int64_t row) const { return value_begin(row + 1); }

  // Dictionary index of row `row` (dictionary layout only).
  int64_t dictionary_index(int64_t row) const;
};

// Throws UnsupportedType naming the column and its format if the column has Layout::kUnsupported.
void require_supported(const ColumnView& column, const char* role);

// Whether a column carries a validity bitmap a kernel may read even when it cannot read the values:
// true for every layout except unions and run-end encoding (which keep nulls elsewhere).
bool validity_readable(const ColumnView& column);

// True if the two columns hold the same values (used to check that the chunks of a table share one
// dictionary: bytes, validity and length must match).
bool same_values(const ColumnView& a, const ColumnView& b);

struct BatchView {
  int64_t num_rows = 0;
  std::vector<ColumnView> columns;

  // Index of the column called `name`; throws InvalidArgument naming `role` (e.g. "key") if absent.
  int column_index(const std::string& name, const char* role) const;
};

// Moves `array` (a struct array described by `schema`) into a shared owner and returns a view of its
// columns. Columns of types no kernel reads (nested, view types) get Layout::kUnsupported; kernels
// call require_supported before touching a column. After the call `array->release` is null: the view owns the data.
BatchView import_batch(const ArrowSchema* schema, ArrowArray* array);

// A table: one or more batches with the same columns, rows numbered consecutively across them (the
// "global" row number; row r of batch b is global row starts[b] + r). Kernels read tables chunk by
// chunk, so a table of any size is read without first combining it into one batch (which cannot be
// done for more than 2 GiB of string data with 32-bit offsets).
struct TableView {
  std::vector<BatchView> batches;  // at least one, possibly with zero rows (it carries the schema)
  std::vector<int64_t> starts;     // batches.size() + 1 entries; starts.back() == num_rows
  int64_t num_rows = 0;

  const BatchView& first() const { return batches.front(); }
  int num_columns() const { return static_cast<int>(batches.front().columns.size()); }
  int column_index(const std::string& name, const char* role) const { return first().column_index(name, role); }
  // Throws InvalidArgument unless every batch's column `column` has the dictionary of batch 0 (the
  // Python layer unifies the dictionaries of a table's chunks before calling a kernel that needs it).
  void require_one_dictionary(int column) const;
};

// Checks that the batches have the same column names and formats and numbers their rows. Throws
// InvalidArgument for an empty list or differing schemas.
TableView make_table(std::vector<BatchView> batches);

// Resolves key names to column indices, checking that there is at least one and that each exists.
std::vector<int> resolve_keys(const BatchView& batch, const std::vector<std::string>& keys);

// Average bytes per row of the given columns over the whole table, for sizing morsels.
double estimated_row_bytes(const TableView& table, const std::vector<int>& columns);

// A buffer for output arrays: 64-byte aligned, never null (at least 64 bytes are allocated), owned by
// whoever holds the pointer.
std::shared_ptr<uint8_t> allocate_buffer(int64_t bytes);

// An array being built in C++ (or a zero-copy view of input memory), exported with export_array.
struct OutputArray {
  int64_t length = 0;
  int64_t null_count = 0;
  int64_t offset = 0;
  std::vector<std::shared_ptr<const uint8_t>> buffers;  // a null pointer is an absent buffer
  std::vector<OutputArray> children;
  std::shared_ptr<const OutputArray> dictionary;  // shared by every output that uses one dictionary
};

// A zero-copy OutputArray of a dictionary column's dictionary, keeping the input alive.
std::shared_ptr<const OutputArray> share_dictionary(const ColumnView& column);

// A struct array (the C Data Interface form of a record batch) over `columns`.
OutputArray make_struct(int64_t length, std::vector<OutputArray> columns);

// Fills `out` (which must not hold a live array) with an ArrowArray that references `array`'s buffers
// and releases them when the consumer calls out->release.
void export_array(const OutputArray& array, ArrowArray* out);

// A read-only view of an OutputArray that has the same type as `like` (used to run kernels over
// intermediate results); `layout` overrides like's layout (a string column scattered with 64-bit
// offsets is viewed as kLargeBinary). The view keeps `array` alive.
ColumnView view_output(const std::shared_ptr<const OutputArray>& array, const ColumnView& like, Layout layout);

// Bytes of row `row`'s value in a var-binary column (0 for a null and for other layouts).
inline int64_t value_size(const ColumnView& column, int64_t row) {
  return column.is_var_binary() ? column.value_end(row) - column.value_begin(row) : 0;
}

// Copies rows into a new array of the sources' type: output row i is row rows[i] of
// sources[source_of[i]] (source_of may be null: every row comes from sources[0]); a negative row gives
// a null. Every source must have the same type, except that var-binary sources may differ in offset
// width; the output gets 64-bit offsets if `large_offsets` and throws Overflow if 32-bit offsets cannot
// hold the data. Dictionary columns keep sharing the (one) dictionary of sources[0].
OutputArray gather_rows(const std::vector<const ColumnView*>& sources, const uint32_t* source_of, const int64_t* rows,
                        int64_t count, bool large_offsets);

// Sets an OutputArray's validity from one byte per row (non-zero = valid); no buffer when all valid.
void set_validity_from_bytes(OutputArray* out, const uint8_t* valid, int64_t count);

// Largest value bytes one array with 32-bit offsets can hold.
constexpr int64_t kMaxBinaryBytes = INT32_MAX;

}  // namespace sabot

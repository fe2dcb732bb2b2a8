#include "arrow_data.h"

#include <cstdlib>
#include <new>
#include <type_traits>

#include "errors.h"

namespace sabot {
namespace {

// Owns an ArrowArray moved out of its producer; releasing it returns the memory to the producer.
struct ImportedArray {
  ArrowArray array;
  ~ImportedArray() {
    if (array.release != nullptr) array.release(&array);
  }
};

struct TypeInfo {
  Layout layout;
  int byte_width;
  int decimal_precision = 0;
  int decimal_scale = 0;
};

bool starts_with(const std::string& text, const char* prefix) {
  return text.rfind(prefix, 0) == 0;
}

// Maps a C Data Interface format string to its layout, or returns false for formats we cannot read.
bool parse_format(const std::string& format, TypeInfo* info) {
  if (format.size() == 1) {
    switch (format[0]) {
      case 'b': *info = {Layout::kBool, 0}; return true;
      case 'c': *info = {Layout::kSignedInt, 1}; return true;
      case 'C': *info = {Layout::kUnsignedInt, 1}; return true;
      case 's': *info = {Layout::kSignedInt, 2}; return true;
      case 'S': *info = {Layout::kUnsignedInt, 2}; return true;
      case 'i': *info = {Layout::kSignedInt, 4}; return true;
      case 'I': *info = {Layout::kUnsignedInt, 4}; return true;
      case 'l': *info = {Layout::kSignedInt, 8}; return true;
      case 'L': *info = {Layout::kUnsignedInt, 8}; return true;
      case 'e': *info = {Layout::kFixedBytes, 2}; return true;
      case 'f': *info = {Layout::kFloat32, 4}; return true;
      case 'g': *info = {Layout::kFloat64, 8}; return true;
      case 'z': case 'u': *info = {Layout::kBinary, 0}; return true;
      case 'Z': case 'U': *info = {Layout::kLargeBinary, 0}; return true;
      default: return false;
    }
  }
  if (starts_with(format, "w:")) {
    const int width = std::atoi(format.c_str() + 2);
    if (width <= 0) return false;
    *info = {Layout::kFixedBytes, width};
    return true;
  }
  if (starts_with(format, "d:")) {
    // "d:precision,scale[,bitwidth]", bit width 128 when absent.
    int commas = 0;
    size_t last_comma = 0;
    for (size_t i = 0; i < format.size(); ++i) {
      if (format[i] == ',') {
        ++commas;
        last_comma = i;
      }
    }
    const int bits = commas >= 2 ? std::atoi(format.c_str() + last_comma + 1) : 128;
    if (commas < 1 || bits <= 0 || bits % 8 != 0) return false;
    const int precision = std::atoi(format.c_str() + 2);
    const int scale = std::atoi(format.c_str() + format.find(',') + 1);
    *info = {Layout::kFixedBytes, bits / 8, precision > 0 ? precision : 1, scale};
    return true;
  }
  if (format == "tdD" || format == "tts" || format == "ttm" || format == "tiM") {
    *info = {Layout::kSignedInt, 4};
    return true;
  }
  if (format == "tdm" || format == "ttu" || format == "ttn" || starts_with(format, "ts") ||
      starts_with(format, "tD")) {
    *info = {Layout::kSignedInt, 8};
    return true;
  }
  if (format == "tiD") {
    *info = {Layout::kFixedBytes, 8};
    return true;
  }
  if (format == "tin") {
    *info = {Layout::kFixedBytes, 16};
    return true;
  }
  return false;
}

const uint8_t* buffer_at(const ArrowArray* array, int64_t index) {
  if (index >= array->n_buffers) return nullptr;
  return static_cast<const uint8_t*>(array->buffers[index]);
}

// Builds the view of one flat (non-dictionary) array.
void describe_flat(const std::string& name, const ArrowSchema* schema, const ArrowArray* array,
                   int64_t parent_offset, ColumnView* view) {
  TypeInfo info;
  view->name = name;
  view->format = schema->format;
  view->length = array->length;
  view->offset = array->offset + parent_offset;
  if (!parse_format(view->format, &info)) {
    view->layout = Layout::kUnsupported;
    // Values stay unread, but count may read the validity bitmap (buffer 0 of most layouts).
    if (view->format == "n") {
      view->null_type = true;
    } else if (validity_readable(*view)) {
      view->validity = buffer_at(array, 0);
      view->has_nulls = view->validity != nullptr && array->null_count != 0;
      if (!view->has_nulls) view->validity = nullptr;
    }
    return;
  }
  view->layout = info.layout;
  view->byte_width = info.byte_width;
  view->decimal_precision = info.decimal_precision;
  view->decimal_scale = info.decimal_scale;
  view->validity = buffer_at(array, 0);
  view->has_nulls = view->validity != nullptr && array->null_count != 0;
  if (!view->has_nulls) view->validity = nullptr;
  if (view->is_var_binary()) {
    view->offsets = buffer_at(array, 1);
    view->values = buffer_at(array, 2);
  } else {
    view->values = buffer_at(array, 1);
  }
}

void describe_column(const std::string& name, const ArrowSchema* schema, const ArrowArray* array,
                     int64_t parent_offset, ColumnView* view) {
  if (schema->dictionary == nullptr) {
    describe_flat(name, schema, array, parent_offset, view);
    return;
  }
  TypeInfo index_info;
  if (!parse_format(schema->format, &index_info) ||
      (index_info.layout != Layout::kSignedInt && index_info.layout != Layout::kUnsignedInt)) {
    throw UnsupportedType("column '" + name + "' has a dictionary with non-integer indices");
  }
  if (array->dictionary == nullptr) {
    throw InvalidArgument("column '" + name + "' is dictionary-encoded but carries no dictionary");
  }
  view->name = name;
  view->format = schema->format;
  view->layout = Layout::kDictionary;
  view->byte_width = index_info.byte_width;
  view->index_signed = index_info.layout == Layout::kSignedInt;
  view->length = array->length;
  view->offset = array->offset + parent_offset;
  view->validity = buffer_at(array, 0);
  view->has_nulls = view->validity != nullptr && array->null_count != 0;
  if (!view->has_nulls) view->validity = nullptr;
  view->values = buffer_at(array, 1);
  if (schema->dictionary->dictionary != nullptr) {
    throw UnsupportedType("column '" + name + "' has a nested dictionary");
  }
  auto values = std::make_shared<ColumnView>();
  describe_flat(name, schema->dictionary, array->dictionary, 0, values.get());
  if (values->layout == Layout::kUnsupported) {
    view->layout = Layout::kUnsupported;
    view->format = "dictionary<" + values->format + ">";
    return;
  }
  view->dictionary = std::move(values);
  view->dictionary_array = array->dictionary;
}

struct ExportedArray {
  std::vector<std::shared_ptr<const uint8_t>> buffer_owners;
  std::vector<const void*> buffer_pointers;
  std::vector<ArrowArray> child_arrays;
  std::vector<ArrowArray*> child_pointers;
  ArrowArray dictionary_array;
};

void release_exported(ArrowArray* array) {
  auto* exported = static_cast<ExportedArray*>(array->private_data);
  // A consumer may have moved children out (leaving them released); release only the live ones.
  for (ArrowArray& child : exported->child_arrays) {
    if (child.release != nullptr) child.release(&child);
  }
  if (array->dictionary != nullptr && array->dictionary->release != nullptr) {
    array->dictionary->release(array->dictionary);
  }
  delete exported;
  array->release = nullptr;
}

}  // namespace

int64_t ColumnView::dictionary_index(int64_t row) const {
  const uint8_t* address = values + (offset + row) * byte_width;
  switch (byte_width) {
    case 1: return index_signed ? load_unaligned<int8_t>(address) : load_unaligned<uint8_t>(address);
    case 2: return index_signed ? load_unaligned<int16_t>(address) : load_unaligned<uint16_t>(address);
    case 4: return index_signed ? load_unaligned<int32_t>(address) : load_unaligned<uint32_t>(address);
    default: return load_unaligned<int64_t>(address);
  }
}

bool validity_readable(const ColumnView& column) {
  if (column.layout != Layout::kUnsupported) return true;
  const std::string& format = column.format;
  return !(column.null_type || starts_with(format, "+u") || starts_with(format, "+r"));
}

bool same_values(const ColumnView& a, const ColumnView& b) {
  if (a.layout != b.layout || a.byte_width != b.byte_width || a.length != b.length) return false;
  if (a.values == b.values && a.offsets == b.offsets && a.validity == b.validity && a.offset == b.offset) return true;
  for (int64_t row = 0; row < a.length; ++row) {
    const bool valid = a.is_valid(row);
    if (valid != b.is_valid(row)) return false;
    if (!valid) continue;
    if (a.layout == Layout::kBool) {
      if (bit_is_set(a.values, a.offset + row) != bit_is_set(b.values, b.offset + row)) return false;
    } else if (a.is_var_binary()) {
      const int64_t begin_a = a.value_begin(row);
      const int64_t begin_b = b.value_begin(row);
      const int64_t size = a.value_end(row) - begin_a;
      if (size != b.value_end(row) - begin_b ||
          std::memcmp(a.values + begin_a, b.values + begin_b, static_cast<size_t>(size)) != 0) {
        return false;
      }
    } else if (std::memcmp(a.values + (a.offset + row) * a.byte_width, b.values + (b.offset + row) * b.byte_width,
                           static_cast<size_t>(a.byte_width)) != 0) {
      return false;
    }
  }
  return true;
}

void require_supported(const ColumnView& column, const char* role) {
  if (column.layout == Layout::kUnsupported) {
    throw UnsupportedType(std::string(role) + " column '" + column.name + "' has unsupported Arrow type (format '" +
                          column.format + "'): nested and view types are not supported");
  }
}

int BatchView::column_index(const std::string& name, const char* role) const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name == name) return static_cast<int>(i);
  }
  std::string known;
  for (const ColumnView& column : columns) known += (known.empty() ? "" : ", ") + column.name;
  throw InvalidArgument(std::string("unknown ") + role + " column '" + name + "' (columns: " + known + ")");
}

void TableView::require_one_dictionary(int column) const {
  const ColumnView& reference = batches.front().columns[static_cast<size_t>(column)];
  if (reference.layout != Layout::kDictionary) return;
  for (size_t b = 1; b < batches.size(); ++b) {
    const ColumnView& other = batches[b].columns[static_cast<size_t>(column)];
    if (other.dictionary_array == reference.dictionary_array) continue;
    if (!same_values(*other.dictionary, *reference.dictionary)) {
      throw InvalidArgument("the chunks of dictionary column '" + reference.name +
                            "' carry different dictionaries; unify them first (Table.unify_dictionaries)");
    }
  }
}

TableView make_table(std::vector<BatchView> batches) {
  if (batches.empty()) throw InvalidArgument("a table needs at least one batch (it carries the schema)");
  const BatchView& first = batches.front();
  for (const BatchView& batch : batches) {
    bool same = batch.columns.size() == first.columns.size();
    for (size_t c = 0; same && c < first.columns.size(); ++c) {
      same = batch.columns[c].name == first.columns[c].name && batch.columns[c].format == first.columns[c].format;
    }
    if (!same) throw InvalidArgument("the batches of a table must all have the same schema");
  }
  TableView table;
  table.starts.push_back(0);
  for (const BatchView& batch : batches) {
    table.num_rows += batch.num_rows;
    table.starts.push_back(table.num_rows);
  }
  table.batches = std::move(batches);
  return table;
}

std::vector<int> resolve_keys(const BatchView& batch, const std::vector<std::string>& keys) {
  if (keys.empty()) throw InvalidArgument("keys must name at least one column, got an empty list");
  std::vector<int> indices;
  for (const std::string& key : keys) indices.push_back(batch.column_index(key, "key"));
  return indices;
}

double estimated_row_bytes(const TableView& table, const std::vector<int>& columns) {
  double bytes = 0;
  for (int index : columns) {
    const ColumnView& column = table.first().columns[static_cast<size_t>(index)];
    if (column.is_var_binary()) {
      int64_t data = 0;
      for (const BatchView& batch : table.batches) {
        const ColumnView& chunk = batch.columns[static_cast<size_t>(index)];
        if (batch.num_rows > 0) data += chunk.value_end(batch.num_rows - 1) - chunk.value_begin(0);
      }
      bytes += (column.layout == Layout::kBinary ? 4 : 8) +
               (table.num_rows > 0 ? static_cast<double>(data) / static_cast<double>(table.num_rows) : 0.0);
    } else {
      bytes += column.byte_width > 0 ? column.byte_width : 1;
    }
  }
  return bytes;
}

BatchView import_batch(const ArrowSchema* schema, ArrowArray* array) {
  if (array->release == nullptr) throw InvalidArgument("the Arrow array was already released");
  auto owner = std::make_shared<ImportedArray>();
  owner->array = *array;
  array->release = nullptr;  // moved: the owner releases it
  const ArrowArray& batch = owner->array;
  if (std::string(schema->format) != "+s") {
    throw InvalidArgument("expected a record batch (struct array), got format '" +
                          std::string(schema->format) + "'");
  }
  if (batch.null_count > 0) throw InvalidArgument("a record batch cannot have null rows");

  BatchView view;
  view.num_rows = batch.length;
  view.columns.resize(static_cast<size_t>(schema->n_children));
  for (int64_t i = 0; i < schema->n_children; ++i) {
    const ArrowSchema* field = schema->children[i];
    ColumnView& column = view.columns[static_cast<size_t>(i)];
    describe_column(field->name != nullptr ? field->name : "", field, batch.children[i], batch.offset,
                    &column);
    column.length = batch.length;
    column.owner = owner;
  }
  return view;
}

std::shared_ptr<uint8_t> allocate_buffer(int64_t bytes) {
  const size_t size = static_cast<size_t>(((bytes < 64 ? 64 : bytes) + 63) / 64 * 64);
  void* data = nullptr;
  if (posix_memalign(&data, 64, size) != 0) throw std::bad_alloc();
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(data), [](uint8_t* p) { std::free(p); });
}

std::shared_ptr<const OutputArray> share_dictionary(const ColumnView& column) {
  if (column.output_dictionary) return column.output_dictionary;
  const ArrowArray* source = column.dictionary_array;
  auto shared = std::make_shared<OutputArray>();
  shared->length = source->length;
  shared->null_count = source->null_count;
  shared->offset = source->offset;
  for (int64_t i = 0; i < source->n_buffers; ++i) {
    const auto* data = static_cast<const uint8_t*>(source->buffers[i]);
    // Aliasing pointer: references the buffer, owns (a share of) the whole imported batch.
    shared->buffers.push_back(data == nullptr ? nullptr
                                              : std::shared_ptr<const uint8_t>(column.owner, data));
  }
  return shared;
}

OutputArray make_struct(int64_t length, std::vector<OutputArray> columns) {
  OutputArray batch;
  batch.length = length;
  batch.buffers.push_back(nullptr);
  batch.children = std::move(columns);
  return batch;
}

void export_array(const OutputArray& array, ArrowArray* out) {
  auto exported = std::make_unique<ExportedArray>();
  exported->buffer_owners = array.buffers;
  for (const auto& buffer : array.buffers) exported->buffer_pointers.push_back(buffer.get());
  exported->child_arrays.resize(array.children.size());
  for (size_t i = 0; i < array.children.size(); ++i) {
    export_array(array.children[i], &exported->child_arrays[i]);
    exported->child_pointers.push_back(&exported->child_arrays[i]);
  }
  out->length = array.length;
  out->null_count = array.null_count;
  out->offset = array.offset;
  out->n_buffers = static_cast<int64_t>(array.buffers.size());
  out->n_children = static_cast<int64_t>(array.children.size());
  out->buffers = exported->buffer_pointers.data();
  out->children = exported->child_pointers.data();
  out->dictionary = nullptr;
  if (array.dictionary) {
    export_array(*array.dictionary, &exported->dictionary_array);
    out->dictionary = &exported->dictionary_array;
  }
  out->release = release_exported;
  out->private_data = exported.release();
}

ColumnView view_output(const std::shared_ptr<const OutputArray>& array, const ColumnView& like, Layout layout) {
  ColumnView view;
  view.name = like.name;
  view.format = like.format;
  view.layout = layout;
  view.byte_width = like.byte_width;
  view.index_signed = like.index_signed;
  view.decimal_precision = like.decimal_precision;
  view.decimal_scale = like.decimal_scale;
  view.length = array->length;
  view.offset = array->offset;
  view.has_nulls = array->buffers[0] != nullptr && array->null_count != 0;
  view.validity = view.has_nulls ? array->buffers[0].get() : nullptr;
  if (view.is_var_binary()) {
    view.offsets = array->buffers[1].get();
    view.values = array->buffers[2].get();
  } else {
    view.values = array->buffers[1].get();
  }
  view.dictionary = like.dictionary;
  view.dictionary_array = like.dictionary_array;
  view.output_dictionary = array->dictionary;
  view.owner = array;
  return view;
}

void set_validity_from_bytes(OutputArray* out, const uint8_t* valid, int64_t count) {
  auto validity = allocate_buffer((count + 7) / 8);
  std::memset(validity.get(), 0, static_cast<size_t>((count + 7) / 8));
  int64_t nulls = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (valid[i]) {
      validity.get()[i >> 3] |= static_cast<uint8_t>(1u << (i & 7));
    } else {
      ++nulls;
    }
  }
  out->null_count = nulls;
  if (out->buffers.empty()) out->buffers.push_back(nullptr);
  out->buffers[0] = nulls == 0 ? nullptr : std::move(validity);
}

OutputArray gather_rows(const std::vector<const ColumnView*>& sources, const uint32_t* source_of, const int64_t* rows,
                        int64_t count, bool large_offsets) {
  const ColumnView& first = *sources.front();
  auto source = [&](int64_t i) -> const ColumnView& { return source_of == nullptr ? first : *sources[source_of[i]]; };
  OutputArray out;
  out.length = count;
  bool any_nulls = false;
  for (const ColumnView* column : sources) any_nulls = any_nulls || column->has_nulls;
  for (int64_t i = 0; !any_nulls && i < count; ++i) any_nulls = rows[i] < 0;
  out.buffers.push_back(nullptr);
  if (any_nulls) {
    std::vector<uint8_t> valid(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) valid[i] = rows[i] >= 0 && source(i).is_valid(rows[i]);
    set_validity_from_bytes(&out, valid.data(), count);
  }

  if (first.layout == Layout::kBool) {
    auto bits = allocate_buffer((count + 7) / 8);
    std::memset(bits.get(), 0, static_cast<size_t>((count + 7) / 8));
    for (int64_t i = 0; i < count; ++i) {
      const ColumnView& column = source(i);
      if (rows[i] >= 0 && bit_is_set(column.values, column.offset + rows[i])) {
        bits.get()[i >> 3] |= static_cast<uint8_t>(1u << (i & 7));
      }
    }
    out.buffers.push_back(std::move(bits));
  } else if (first.is_var_binary()) {
    int64_t total = 0;
    for (int64_t i = 0; i < count; ++i) total += rows[i] >= 0 ? value_size(source(i), rows[i]) : 0;
    if (!large_offsets && total > kMaxBinaryBytes) {
      throw Overflow("column '" + first.name + "' needs more than 2 GiB of string data in one array; use large_string");
    }
    auto offsets = allocate_buffer((count + 1) * (large_offsets ? 8 : 4));
    auto data = allocate_buffer(total);
    int64_t position = 0;
    for (int64_t i = 0; i < count; ++i) {
      if (large_offsets) {
        reinterpret_cast<int64_t*>(offsets.get())[i] = position;
      } else {
        reinterpret_cast<int32_t*>(offsets.get())[i] = static_cast<int32_t>(position);
      }
      if (rows[i] < 0) continue;
      const ColumnView& column = source(i);
      const int64_t begin = column.value_begin(rows[i]);
      const int64_t size = column.value_end(rows[i]) - begin;
      std::memcpy(data.get() + position, column.values + begin, static_cast<size_t>(size));
      position += size;
    }
    if (large_offsets) {
      reinterpret_cast<int64_t*>(offsets.get())[count] = position;
    } else {
      reinterpret_cast<int32_t*>(offsets.get())[count] = static_cast<int32_t>(position);
    }
    out.buffers.push_back(std::move(offsets));
    out.buffers.push_back(std::move(data));
  } else {
    const int64_t width = first.byte_width;
    auto values = allocate_buffer(count * width);
    // A compile-time width turns each memcpy into one load and store (a runtime width calls libc's
    // memcpy per value, which dominated gathering 1 M group keys).
    auto gather = [&](auto width_tag) {
      constexpr int64_t kWidth = decltype(width_tag)::value;
      const int64_t step = kWidth > 0 ? kWidth : width;
      uint8_t* out_values = values.get();
      if (source_of == nullptr) {
        const uint8_t* in_values = first.values + first.offset * step;
        for (int64_t i = 0; i < count; ++i) {
          if (rows[i] < 0) {
            std::memset(out_values + i * step, 0, static_cast<size_t>(step));
          } else {
            std::memcpy(out_values + i * step, in_values + rows[i] * step, static_cast<size_t>(kWidth > 0 ? kWidth : step));
          }
        }
        return;
      }
      for (int64_t i = 0; i < count; ++i) {
        const ColumnView& column = source(i);
        if (rows[i] < 0) {
          std::memset(out_values + i * step, 0, static_cast<size_t>(step));
        } else {
          std::memcpy(out_values + i * step, column.values + (column.offset + rows[i]) * step,
                      static_cast<size_t>(kWidth > 0 ? kWidth : step));
        }
      }
    };
    switch (width) {
      case 1: gather(std::integral_constant<int64_t, 1>{}); break;
      case 2: gather(std::integral_constant<int64_t, 2>{}); break;
      case 4: gather(std::integral_constant<int64_t, 4>{}); break;
      case 8: gather(std::integral_constant<int64_t, 8>{}); break;
      case 16: gather(std::integral_constant<int64_t, 16>{}); break;
      default: gather(std::integral_constant<int64_t, 0>{}); break;
    }
    out.buffers.push_back(std::move(values));
    if (first.layout == Layout::kDictionary) out.dictionary = share_dictionary(first);
  }
  return out;
}

}  // namespace sabot

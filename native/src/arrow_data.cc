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
    if (bits <= 0 || bits % 8 != 0) return false;
    *info = {Layout::kFixedBytes, bits / 8};
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
  if (!parse_format(view->format, &info)) {
    view->layout = Layout::kUnsupported;
    view->length = array->length;
    return;
  }
  view->layout = info.layout;
  view->byte_width = info.byte_width;
  view->length = array->length;
  view->offset = array->offset + parent_offset;
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

ColumnView view_output(const std::shared_ptr<const OutputArray>& array, const ColumnView& like) {
  ColumnView view;
  view.name = like.name;
  view.format = like.format;
  view.layout = like.layout;
  view.byte_width = like.byte_width;
  view.index_signed = like.index_signed;
  view.length = array->length;
  view.offset = array->offset;
  view.has_nulls = array->buffers[0] != nullptr && array->null_count != 0;
  view.validity = view.has_nulls ? array->buffers[0].get() : nullptr;
  if (like.is_var_binary()) {
    view.offsets = array->buffers[1].get();
    view.values = array->buffers[2].get();
  } else {
    view.values = array->buffers[1].get();
  }
  view.dictionary = like.dictionary;
  view.dictionary_array = like.dictionary_array;
  view.owner = array;
  return view;
}

OutputArray gather_column(const ColumnView& column, const int64_t* rows, int64_t count) {
  OutputArray out;
  out.length = count;
  if (column.has_nulls) {
    auto validity = allocate_buffer((count + 7) / 8);
    std::memset(validity.get(), 0, static_cast<size_t>((count + 7) / 8));
    int64_t nulls = 0;
    for (int64_t i = 0; i < count; ++i) {
      if (column.is_valid(rows[i])) {
        validity.get()[i >> 3] |= static_cast<uint8_t>(1u << (i & 7));
      } else {
        ++nulls;
      }
    }
    out.null_count = nulls;
    out.buffers.push_back(nulls == 0 ? nullptr : std::move(validity));
  } else {
    out.buffers.push_back(nullptr);
  }

  if (column.layout == Layout::kBool) {
    auto bits = allocate_buffer((count + 7) / 8);
    std::memset(bits.get(), 0, static_cast<size_t>((count + 7) / 8));
    for (int64_t i = 0; i < count; ++i) {
      if (bit_is_set(column.values, column.offset + rows[i])) {
        bits.get()[i >> 3] |= static_cast<uint8_t>(1u << (i & 7));
      }
    }
    out.buffers.push_back(std::move(bits));
  } else if (column.is_var_binary()) {
    const bool large = column.layout == Layout::kLargeBinary;
    int64_t total = 0;
    for (int64_t i = 0; i < count; ++i) total += column.value_end(rows[i]) - column.value_begin(rows[i]);
    if (!large && total > INT32_MAX) {
      throw Overflow("column '" + column.name + "' needs more than 2 GiB of string data; use large_string");
    }
    auto offsets = allocate_buffer((count + 1) * (large ? 8 : 4));
    auto data = allocate_buffer(total);
    int64_t position = 0;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t begin = column.value_begin(rows[i]);
      const int64_t size = column.value_end(rows[i]) - begin;
      if (large) {
        reinterpret_cast<int64_t*>(offsets.get())[i] = position;
      } else {
        reinterpret_cast<int32_t*>(offsets.get())[i] = static_cast<int32_t>(position);
      }
      std::memcpy(data.get() + position, column.values + begin, static_cast<size_t>(size));
      position += size;
    }
    if (large) {
      reinterpret_cast<int64_t*>(offsets.get())[count] = position;
    } else {
      reinterpret_cast<int32_t*>(offsets.get())[count] = static_cast<int32_t>(position);
    }
    out.buffers.push_back(std::move(offsets));
    out.buffers.push_back(std::move(data));
  } else {
    const int64_t width = column.byte_width;
    auto values = allocate_buffer(count * width);
    // A compile-time width turns each memcpy into one load and store (a runtime width calls libc's
    // memcpy per value, which dominated gathering 1 M group keys).
    auto gather = [&](auto width_tag) {
      constexpr int64_t kWidth = decltype(width_tag)::value;
      const int64_t step = kWidth > 0 ? kWidth : width;
      uint8_t* out_values = values.get();
      const uint8_t* in_values = column.values + column.offset * step;
      for (int64_t i = 0; i < count; ++i) {
        std::memcpy(out_values + i * step, in_values + rows[i] * step, static_cast<size_t>(kWidth > 0 ? kWidth : step));
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
    if (column.layout == Layout::kDictionary) out.dictionary = share_dictionary(column);
  }
  return out;
}

}  // namespace sabot

#include "core/json.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>

#include <vector>

namespace tellonce {
namespace {

// Depth check after an iterative parse: the iterative parser cannot blow the stack,
// and walking the tree with an explicit stack keeps it that way.
bool deeper_than(const rapidjson::Value& root, unsigned limit) {
  struct Frame { const rapidjson::Value* v; unsigned depth; };
  std::vector<Frame> stack{{&root, 1}};
  while (!stack.empty()) {
    auto [v, d] = stack.back();
    stack.pop_back();
    if (d > limit) return true;
    if (v->IsObject()) {
      for (auto& m : v->GetObject())
        if (m.value.IsObject() || m.value.IsArray()) stack.push_back({&m.value, d + 1});
    } else if (v->IsArray()) {
      for (auto& e : v->GetArray())
        if (e.IsObject() || e.IsArray()) stack.push_back({&e, d + 1});
    }
  }
  return false;
}

}  // namespace

const rapidjson::Value* json_member(const rapidjson::Value& v, std::string_view name) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(rapidjson::StringRef(name.data(), name.size()));
  return it == v.MemberEnd() ? nullptr : &it->value;
}

std::string_view json_string(const rapidjson::Value* v) {
  if (!v || !v->IsString()) return {};
  return {v->GetString(), v->GetStringLength()};
}

std::string line_column(std::string_view text, std::size_t offset) {
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') { ++line; col = 1; } else { ++col; }
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

Result<void> parse_json_into(rapidjson::Document& doc, std::string_view body, const JsonLimits& limits) {
  if (body.size() > limits.max_bytes) {
    return Failure::permanent(Errc::too_large, Issue{Severity::error, "too-long",
        "body is " + std::to_string(body.size()) + " bytes; the limit is " +
            std::to_string(limits.max_bytes), "(body)", ""});
  }
  constexpr unsigned flags = rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag |
                             rapidjson::kParseFullPrecisionFlag;
  rapidjson::MemoryStream ms(body.data(), body.size());
  doc.ParseStream<flags, rapidjson::UTF8<>>(ms);
  if (doc.HasParseError()) {
    auto code = doc.GetParseError();
    std::string why = code == rapidjson::kParseErrorStringInvalidEncoding
                          ? "invalid UTF-8"
                          : rapidjson::GetParseError_En(code);
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure",
        "malformed JSON at " + line_column(body, doc.GetErrorOffset()) + " (byte " +
            std::to_string(doc.GetErrorOffset()) + "): " + why, "(body)", "json"});
  }
  if (deeper_than(doc, limits.max_depth)) {
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "too-costly",
        "JSON nesting is deeper than the limit of " + std::to_string(limits.max_depth) + " levels",
        "(body)", "json-depth"});
  }
  return {};
}

Result<rapidjson::Document> parse_json(std::string_view body, const JsonLimits& limits) {
  rapidjson::Document doc;
  if (auto parsed = parse_json_into(doc, body, limits); !parsed) return parsed.error();
  return doc;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 0xf]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

std::string operation_outcome_json(const std::vector<Issue>& issues) {
  std::string out = R"({"resourceType":"OperationOutcome","issue":[)";
  bool first = true;
  for (const auto& i : issues) {
    if (!first) out.push_back(',');
    first = false;
    out += R"({"severity":)";
    append_json_string(out, to_string(i.severity));
    out += R"(,"code":)";
    append_json_string(out, i.code.empty() ? "processing" : i.code);
    if (!i.rule.empty()) {
      out += R"(,"details":{"coding":[{"system":"urn:tellonce:rule","code":)";
      append_json_string(out, i.rule);
      out += "}]}";
    }
    out += R"(,"diagnostics":)";
    append_json_string(out, i.diagnostics);
    if (!i.location.empty()) {
      out += R"(,"location":[)";
      append_json_string(out, i.location);
      out += R"(],"expression":[)";
      append_json_string(out, i.location);
      out += "]";
    }
    out += "}";
  }
  if (issues.empty())
    out += R"({"severity":"information","code":"informational","diagnostics":"no issues"})";
  out += "]}";
  return out;
}

}  // namespace tellonce

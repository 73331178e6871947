// A one-pass reader of the XHTML in Narrative.div: tags and their attributes, enough to say what
// is not allowed. Well-formedness beyond that is not checked (the structural check has already
// asked for one <div> in the XHTML namespace).
#include "broker/validate/narrative_rules.hpp"

#include "broker/validate/contained_ids.hpp"
#include "tellonce/json.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace tellonce::fhir {
namespace {

using rapidjson::Value;

// HTML 4.0 chapters 7-11 and 12 (less forms, frames, scripts, objects), as txt-1 lists them.
// Every list is kept sorted: they are binary-searched.
constexpr std::array<std::string_view, 50> allowed_elements = {
    "a",     "abbr",  "acronym", "address", "area", "b",     "bdo",   "big",   "blockquote", "br",
    "caption", "cite", "code",   "col",     "colgroup", "dd", "dfn",  "div",   "dl",         "dt",
    "em",    "h1",    "h2",      "h3",      "h4",   "h5",    "h6",    "hr",    "i",          "img",
    "kbd",   "li",    "map",     "ol",      "p",    "pre",   "q",     "samp",  "small",      "span",
    "strong", "sub",  "sup",     "table",   "tbody", "td",   "tfoot", "th",    "thead",      "tr"};
constexpr std::array<std::string_view, 5> more_allowed_elements = {"s", "tt", "u", "ul", "var"};  // sorted

// Attributes any allowed element may carry (core, i18n, table layout).
constexpr std::array<std::string_view, 21> common_attributes = {
    "abbr",  "accesskey", "align",   "axis",  "char",     "charoff", "class", "colspan", "dir",    "headers", "id",
    "lang",  "rowspan",   "scope",   "span",  "style",    "tabindex", "title", "valign", "width",  "xml:lang"};
// element.attribute pairs beyond those.
constexpr std::array<std::string_view, 40> element_attributes = {
    "a.charset",     "a.coords",    "a.href",         "a.hreflang",    "a.name",     "a.rel",
    "a.rev",         "a.shape",     "a.type",         "area.alt",      "area.coords", "area.href",
    "area.nohref",   "area.shape",  "blockquote.cite", "br.clear",     "col.width",  "colgroup.width",
    "img.align",     "img.alt",     "img.border",     "img.height",    "img.hspace", "img.ismap",
    "img.longdesc",  "img.src",     "img.usemap",     "img.vspace",    "img.width",  "li.type",
    "li.value",      "map.name",    "ol.start",       "ol.type",       "pre.width",  "q.cite",
    "table.border",  "table.cellpadding", "table.cellspacing", "table.summary"};
constexpr std::array<std::string_view, 6> more_element_attributes = {"table.frame", "table.rules", "td.height",
                                                                       "td.nowrap",   "th.nowrap",   "ul.type"};

template <std::size_t N>
bool listed(const std::array<std::string_view, N>& list, std::string_view s) {
  return std::binary_search(list.begin(), list.end(), s);
}

bool element_allowed(std::string_view name) {
  return listed(allowed_elements, name) || listed(more_allowed_elements, name);
}

bool attribute_allowed(std::string_view element, std::string_view attribute) {
  if (listed(common_attributes, attribute) || attribute == "xmlns" || attribute.starts_with("xmlns:")) return true;
  char pair[64];
  if (element.size() + attribute.size() + 1 >= sizeof pair) return false;
  std::copy(element.begin(), element.end(), pair);
  pair[element.size()] = '.';
  std::copy(attribute.begin(), attribute.end(), pair + element.size() + 1);
  std::string_view key(pair, element.size() + attribute.size() + 1);
  return listed(element_attributes, key) || listed(more_element_attributes, key);
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == ':' || c == '.';
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if ((s[i] | 0x20) != prefix[i]) return false;
  return true;
}

class Reader {
 public:
  // `path` is the resource's location; the div's is built only when there is something to say.
  Reader(std::string_view xhtml, const std::string& path, std::vector<Issue>& out) : s_(xhtml), path_(path), out_(out) {}

  void run() {
    check_entities();
    std::size_t pos = 0;
    while (pos < s_.size()) {
      ++validation_steps;
      std::size_t lt = s_.find('<', pos);
      if (lt == std::string_view::npos) break;
      pos = lt;
      std::string_view rest = s_.substr(pos);
      if (rest.starts_with("<!--")) {
        pos = skip_past(pos, "-->");
      } else if (rest.starts_with("<![CDATA[")) {
        pos = skip_past(pos, "]]>");
      } else if (rest.starts_with("<?") || rest.starts_with("<!") || rest.starts_with("</")) {
        pos = skip_past(pos, ">");
      } else {
        pos = tag(pos + 1);
      }
    }
  }

  // XHTML in FHIR is XML with no DTD: of the named entities only XML's five exist. &nbsp; or
  // &reg; from HTML make the narrative unreadable to an XML parser.
  void check_entities() {
    for (std::size_t at = s_.find('&'); at != std::string_view::npos; at = s_.find('&', at + 1)) {
      std::size_t end = at + 1;
      while (end < s_.size() && end - at <= 32 && std::isalnum(static_cast<unsigned char>(s_[end]))) ++end;
      if (end == at + 1 || end >= s_.size() || s_[end] != ';') continue;  // &#...; or not an entity
      std::string_view name = s_.substr(at + 1, end - at - 1);
      if (name == "lt" || name == "gt" || name == "amp" || name == "quot" || name == "apos") continue;
      std::string text = "&";
      text.append(name).append("; is an HTML entity that FHIR's XHTML does not define (only &lt; &gt; &amp; "
                               "&quot; &apos;): write the character itself or a numeric reference such as &#174;");
      report("xhtml-entity", std::move(text));
    }
  }

  // What links to "#x" must find: ids and names in the XHTML, else contained resources. The
  // targets found nowhere there, in the order of the links.
  std::vector<std::string_view> unresolved_links(const Value& resource) {
    std::vector<std::string_view> missing;
    if (links_.empty()) return missing;
    std::sort(anchors_.begin(), anchors_.end());
    ContainedIds contained(&resource);
    for (std::string_view target : links_)
      if (!std::binary_search(anchors_.begin(), anchors_.end(), target) && !contained.contains(target))
        missing.push_back(target);
    return missing;
  }

 private:
  std::size_t skip_past(std::size_t pos, std::string_view end) {
    auto at = s_.find(end, pos);
    return at == std::string_view::npos ? s_.size() : at + end.size();
  }

  // Reads one start tag from just after its '<'; returns the position after its '>'.
  std::size_t tag(std::size_t pos) {
    std::size_t start = pos;
    while (pos < s_.size() && name_char(s_[pos])) ++pos;
    std::string_view name = s_.substr(start, pos - start);
    bool element_ok = element_allowed(name);
    if (!element_ok) {
      std::string why = "element <";
      why += name.substr(0, 32);
      why += "> is not allowed in a FHIR narrative: ";
      why += dangerous(name) ? "no scripts, styles, forms, frames or embedded objects" : "only basic HTML formatting";
      report("txt-1", std::move(why));
    }
    while (pos < s_.size()) {
      ++validation_steps;
      while (pos < s_.size() && is_space(s_[pos])) ++pos;
      if (pos >= s_.size()) break;
      if (s_[pos] == '>') return pos + 1;
      if (s_[pos] == '/') {
        ++pos;
        continue;
      }
      std::size_t a = pos;
      while (pos < s_.size() && !is_space(s_[pos]) && s_[pos] != '=' && s_[pos] != '>' && s_[pos] != '/') ++pos;
      std::string_view attribute = s_.substr(a, pos - a);
      if (attribute.empty()) {  // a stray character: step over it
        ++pos;
        continue;
      }
      while (pos < s_.size() && is_space(s_[pos])) ++pos;
      std::string_view value;
      if (pos < s_.size() && s_[pos] == '=') {
        ++pos;
        while (pos < s_.size() && is_space(s_[pos])) ++pos;
        if (pos < s_.size() && (s_[pos] == '"' || s_[pos] == '\'')) {
          char quote = s_[pos++];
          auto end = s_.find(quote, pos);
          if (end == std::string_view::npos) end = s_.size();
          value = s_.substr(pos, end - pos);
          pos = end + 1;
        } else {
          std::size_t v = pos;
          while (pos < s_.size() && !is_space(s_[pos]) && s_[pos] != '>') ++pos;
          value = s_.substr(v, pos - v);
        }
      }
      if (element_ok) check_attribute(name, attribute, value);
    }
    return s_.size();
  }

  static bool dangerous(std::string_view name) {
    for (std::string_view d : {"script", "style", "object", "embed", "iframe", "frame", "frameset", "form", "input",
                               "button", "select", "textarea", "applet", "link", "meta", "base"})
      if (name == d) return true;
    return false;
  }

  void check_attribute(std::string_view element, std::string_view attribute, std::string_view value) {
    if (starts_with_ci(attribute, "on")) {
      report("txt-1", "event attribute " + std::string(attribute.substr(0, 32)) + " on <" + std::string(element) +
                          "> is not allowed in a FHIR narrative (no scripts)");
      return;
    }
    if (!attribute_allowed(element, attribute)) {
      report("txt-1", "attribute " + std::string(attribute.substr(0, 32)) + " is not allowed on <" +
                          std::string(element) + "> in a FHIR narrative");
      return;
    }
    if (attribute == "id" || attribute == "name") anchors_.push_back(value);
    if (element == "img" && attribute == "src" && !value.starts_with("#") && !starts_with_ci(value, "data:"))
      report("txt-1", "<img src> must be an image inside the resource (#id of a contained Binary, or a data: URL), not '" +
                          std::string(value.substr(0, 64)) + "'");
    if ((element == "a" || element == "area") && attribute == "href") {
      std::string_view v = value;
      while (!v.empty() && is_space(v.front())) v.remove_prefix(1);
      if (starts_with_ci(v, "javascript:") || starts_with_ci(v, "vbscript:"))
        report("txt-1", "a link in the narrative runs a script (" + std::string(v.substr(0, 11)) + "): not allowed");
      else if (v.size() > 1 && v[0] == '#')
        links_.push_back(v.substr(1));
    }
  }

  void report(const char* rule, std::string text) {
    if (reported_ >= max_reported) return;  // one bad narrative should not drown the rest
    ++reported_;
    out_.push_back(Issue{Severity::error, "invariant", std::move(text), path_ + ".text.div", rule});
  }

  static constexpr int max_reported = 10;
  std::string_view s_;
  const std::string& path_;
  std::vector<Issue>& out_;
  std::vector<std::string_view> anchors_, links_;
  int reported_ = 0;
};

}  // namespace

namespace {

// The links in `missing` that are not in `elsewhere` (sorted; empty: none), the first ten.
void report_links(const std::vector<std::string_view>& missing, const std::vector<std::string>& elsewhere,
                  const std::string& path, const char* where, std::vector<Issue>& out) {
  int reported = 0;
  for (std::string_view target : missing) {
    if (std::binary_search(elsewhere.begin(), elsewhere.end(), target)) continue;
    if (reported++ == 10) return;
    std::string text = "the narrative links to \"#";
    text.append(target.substr(0, 64)).append("\" but nothing in ").append(where).append(" has that id or name");
    out.push_back(Issue{Severity::error, "invariant", std::move(text), path + ".text.div", "narrative-link"});
  }
}

const Value* narrative_div(const Value& resource) {
  const Value* text = json_member(resource, "text");
  const Value* div = text && text->IsObject() ? json_member(*text, "div") : nullptr;
  return div && div->IsString() ? div : nullptr;
}

// "...entry[12].resource": a Bundle entry's resource, whose links the Bundle checks.
bool is_bundle_entry(std::string_view path) {
  constexpr std::string_view tail = "].resource";
  if (!path.ends_with(tail)) return false;
  path.remove_suffix(tail.size());
  while (!path.empty() && path.back() >= '0' && path.back() <= '9') path.remove_suffix(1);
  return path.ends_with(".entry[") || path == "entry[";
}

}  // namespace

void check_narrative(const Value& resource, const std::string& path, std::vector<Issue>& out) {
  const Value* div = narrative_div(resource);
  if (!div) return;
  Reader reader({div->GetString(), div->GetStringLength()}, path, out);
  reader.run();
  if (is_bundle_entry(path)) return;  // check_bundle_narrative_links() does its links
  report_links(reader.unresolved_links(resource), {}, path, "it or in contained", out);
}

void check_bundle_narrative_links(const Value& bundle, const std::string& path, std::vector<Issue>& out) {
  const Value* entries = json_member(bundle, "entry");
  if (!entries || !entries->IsArray()) return;
  std::vector<std::string> targets;  // what a link may name: built only when a link needs it
  bool built = false;
  for (rapidjson::SizeType i = 0; i < entries->Size(); ++i) {
    const Value* resource = json_member((*entries)[i], "resource");
    const Value* div = resource && resource->IsObject() ? narrative_div(*resource) : nullptr;
    if (!div) continue;
    std::string_view xhtml(div->GetString(), div->GetStringLength());
    if (xhtml.find("href") == std::string_view::npos || xhtml.find('#') == std::string_view::npos) continue;
    const std::string here = path + ".entry[" + std::to_string(i) + "].resource";
    std::vector<Issue> again;  // the entry's own check has reported everything else
    Reader reader(xhtml, here, again);
    reader.run();
    auto missing = reader.unresolved_links(*resource);
    if (missing.empty()) continue;
    if (!built) {
      // Another entry, by id or as the renderers of Bundles anchor it: Type_id, Type/id.
      for (const auto& entry : entries->GetArray()) {
        ++validation_steps;
        const Value* r = json_member(entry, "resource");
        std::string_view id = r ? json_string(json_member(*r, "id")) : std::string_view{};
        std::string_view type = r ? json_string(json_member(*r, "resourceType")) : std::string_view{};
        if (id.empty()) continue;
        targets.emplace_back(id);
        if (!type.empty()) {
          targets.push_back(std::string(type) + "_" + std::string(id));
          targets.push_back(std::string(type) + "/" + std::string(id));
        }
      }
      std::sort(targets.begin(), targets.end());
      built = true;
    }
    report_links(missing, targets, here, "it, in contained or in the Bundle's entries", out);
  }
}

}  // namespace tellonce::fhir

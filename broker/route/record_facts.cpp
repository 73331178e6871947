#include "broker/route/record_walk.hpp"
#include "tellonce/router.hpp"

#include <algorithm>

namespace tellonce {

namespace {

namespace rw = record_walk;

constexpr std::string_view nhs_number_system = "https://fhir.nhs.uk/Id/nhs-number";

std::string_view nhs_number_of(const rapidjson::Value& patient) {
  const auto* ids = rw::member(patient, "identifier");
  if (!ids || !ids->IsArray()) return {};
  for (const auto& id : ids->GetArray())
    if (rw::text_at(id, "system") == nhs_number_system) return rw::text_at(id, "value");
  return {};
}

// subject.reference, else patient.reference: who a clinical resource is about.
std::string_view subject_reference(const rapidjson::Value& resource) {
  for (std::string_view field : {"subject", "patient"}) {
    if (const auto* s = rw::member(resource, field)) {
      if (auto ref = rw::text_at(*s, "reference"); !ref.empty()) return ref;
    }
  }
  return {};
}

std::string_view subject_identifier(const rapidjson::Value& resource) {
  const auto* s = rw::member(resource, "subject");
  const auto* id = s ? rw::member(*s, "identifier") : nullptr;
  return id ? rw::text_at(*id, "value") : std::string_view{};
}

// The resource itself, or for a Bundle its entries in order, until read() finds something.
template <class Read>
std::string_view first_in_top_or_entries(const rapidjson::Value& record, Read read) {
  if (!rw::is_bundle(record)) return read(record);
  const auto* entries = rw::member(record, "entry");
  if (!entries || !entries->IsArray()) return {};
  for (const auto& e : entries->GetArray()) {
    if (const auto* r = rw::member(e, "resource")) {
      if (auto v = read(*r); !v.empty()) return v;
    }
  }
  return {};
}

std::string message_event(const rapidjson::Value& bundle) {
  if (rw::text_at(bundle, "type") != "message") return {};
  const auto* entries = rw::member(bundle, "entry");
  if (!entries || !entries->IsArray() || entries->Empty()) return {};
  const auto* header = rw::member((*entries)[0], "resource");
  if (!header || rw::resource_type(*header) != "MessageHeader") return {};
  const auto* coding = rw::member(*header, "eventCoding");
  if (!coding) return {};
  auto system = rw::text_at(*coding, "system");
  auto code = rw::text_at(*coding, "code");
  if (code.empty()) return {};
  std::string out;
  if (!system.empty()) {
    out.reserve(system.size() + 1 + code.size());
    out.append(system).push_back('|');
  }
  out.append(code);
  return out;
}

}  // namespace

RecordFacts read_record_facts(const rapidjson::Value& record) {
  RecordFacts facts;
  facts.resource_type = rw::resource_type(record);
  if (rw::is_bundle(record)) facts.event = message_event(record);

  std::string_view nhs_number;
  auto collect = [&](const rapidjson::Value& resource) {
    auto type = rw::resource_type(resource);
    if (!type.empty() &&
        std::find(facts.contained_types.begin(), facts.contained_types.end(), type) == facts.contained_types.end())
      facts.contained_types.emplace_back(type);
    if (nhs_number.empty() && type == "Patient") nhs_number = nhs_number_of(resource);
    return false;  // visit everything
  };
  rw::visit_resources(record, collect);

  if (!nhs_number.empty()) {
    facts.patient_key = nhs_number;
  } else if (auto ref = first_in_top_or_entries(record, subject_reference); !ref.empty()) {
    facts.patient_key = ref;
  } else {
    facts.patient_key = first_in_top_or_entries(record, subject_identifier);
  }
  return facts;
}

}  // namespace tellonce

#include "support/builders.hpp"

namespace tellonce::test {

DeliveryJob job(std::int64_t seq, std::string destination, std::string patient) {
  DeliveryJob j;
  j.delivery_id = seq;
  j.seq = seq;
  j.message_id = "m" + std::to_string(seq);
  j.destination = std::move(destination);
  j.patient_key = std::move(patient);
  j.resource_type = "Patient";
  j.body = R"({"resourceType":"Patient"})";
  return j;
}

}  // namespace tellonce::test

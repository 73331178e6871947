// A QuestionnaireResponse against the Questionnaire it answers, when that Questionnaire travels
// inside it (`questionnaire: "#id"` naming a contained Questionnaire): the only case the broker
// can check without fetching anything. Each item's linkId must be one of the Questionnaire's, in
// the same place; each answer must have the value type its item asks for; a `choice` item's
// answer must be one of its options (answerOption, or an answerValueSet naming a contained
// ValueSet that lists its codes). Internal to broker/validate; called by the FHIR invariants once
// per QuestionnaireResponse. Thread-safe; work grows linearly with both resources.
#pragma once

#include "tellonce/error.hpp"

#include <rapidjson/document.h>

#include <string>
#include <vector>

namespace tellonce::fhir {

// `response` is a QuestionnaireResponse at `path`; nothing is checked when its questionnaire is
// not a contained Questionnaire.
void check_questionnaire_response(const rapidjson::Value& response, const std::string& path,
                                  std::vector<Issue>& out);

}  // namespace tellonce::fhir

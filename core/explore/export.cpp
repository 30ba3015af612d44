// SPDX-License-Identifier: GPL-3.0-or-later
#include "explore/export.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/safetensors.h"

namespace tq {

namespace {

std::string num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string csvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string r = "\"";
  for (char c : s) {
    if (c == '"') r += '"';
    r += c;
  }
  return r + "\"";
}

const char* kMetricCols = "logit_cosine,attention_cosine,kl,top1,top5,output_error,bias,variance,slope,correlation,queries";

std::string metricFields(const AttentionMetrics& m) {
  return num(m.logitCosine) + "," + num(m.attentionCosine) + "," + num(m.kl) + "," + num(m.top1) + "," + num(m.top5) + "," + num(m.outputError) +
         "," + num(m.bias) + "," + num(m.variance) + "," + num(m.slope) + "," + num(m.correlation) + "," + std::to_string(m.count);
}

nlohmann::json jnum(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json metricsJson(const AttentionMetrics& m) {
  return {{"logit_cosine", jnum(m.logitCosine)}, {"attention_cosine", jnum(m.attentionCosine)}, {"kl", jnum(m.kl)},
          {"top1", jnum(m.top1)}, {"top5", jnum(m.top5)}, {"output_error", jnum(m.outputError)}, {"bias", jnum(m.bias)},
          {"variance", jnum(m.variance)}, {"slope", jnum(m.slope)}, {"correlation", jnum(m.correlation)}, {"queries", m.count}};
}

nlohmann::json keyJson(const KeyVariant& k) { return {{"method", k.methodName()}, {"mode", keyModeName(k.mode)}, {"bits", k.bits}, {"proj_dim", k.projDim}}; }

void toFile(const std::string& path, const std::function<void(std::ostream&)>& write) {
  std::ostringstream os;
  write(os);
  const std::string s = os.str();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw DataError(path, std::string("cannot write: ") + std::strerror(errno));
  const bool ok = std::fwrite(s.data(), 1, s.size(), f) == s.size();
  if (std::fclose(f) != 0 || !ok) throw DataError(path, "write failed (disk full?)");
}

}  // namespace

std::string centeringLabel(const SweepConfig& c) { return keyCenteringLabel(c.centering, c.centerWindow); }

void writeCsv(const SweepResult& r, std::ostream& os) {
  os << "method,key_mode,key_bits,proj_dim,value_bits,layer,q_head,kv_head,tokens," << kMetricCols
     << ",key_vector_mse,value_vector_mse,key_bytes_per_vector,value_bytes_per_vector,key_bits_per_coordinate,key_centering,method_options,protect_layers,recent_window\n";
  const std::string centering = centeringLabel(r.config);
  for (const SweepRow& row : r.rows) {
    os << csvField(row.key.methodName()) << ',' << csvField(keyModeName(row.key.mode)) << ',' << row.key.bits << ',' << row.key.projDim << ','
       << row.valueBits << ',' << row.layer << ',' << row.qHead << ',' << row.kvHead << ',' << row.tokens << ',' << metricFields(row.m) << ','
       << num(row.keyVectorMse) << ',' << num(row.valueVectorMse) << ',' << num(row.keyBytesPerVector) << ',' << num(row.valueBytesPerVector) << ','
       << num(8.0 * row.keyBytesPerVector / r.headDim) << ',' << centering << ',' << csvField(methodOptionsLabel(row.key.method, r.config.methodOptions)) << ','
       << protectLayersLabel(r.config) << ',' << r.config.recentWindow << '\n';
  }
}

void writeSummaryCsv(const SweepResult& r, std::ostream& os) {
  std::string worst;
  for (std::string c : {"logit_cosine", "attention_cosine", "kl", "top1", "top5", "output_error", "bias", "variance", "slope", "correlation", "queries"})
    worst += ",worst_" + c;
  os << "method,key_mode,key_bits,proj_dim,value_bits,rows,key_bytes_per_vector,value_bytes_per_vector,key_bits_per_coordinate," << kMetricCols << worst << '\n';
  for (const SweepSummary& s : r.summary())
    os << csvField(s.key.methodName()) << ',' << csvField(keyModeName(s.key.mode)) << ',' << s.key.bits << ',' << s.key.projDim << ',' << s.valueBits << ','
       << s.rows << ',' << num(s.keyBytesPerVector) << ',' << num(s.valueBytesPerVector) << ',' << num(8.0 * s.keyBytesPerVector / r.headDim) << ','
       << metricFields(s.mean) << ',' << metricFields(s.worst) << '\n';
}

void writeJson(const SweepResult& r, std::ostream& os) {
  nlohmann::json j;
  j["source"] = r.sourceName;
  j["model"] = r.modelName;
  j["backend"] = r.backend;
  j["device"] = r.device;
  j["queries"] = r.queryLabel;
  j["head_dim"] = r.headDim;
  j["tokens"] = r.tokens;
  j["seconds"] = jnum(r.seconds);
  j["cancelled"] = r.cancelled;
  const SweepConfig& c = r.config;
  nlohmann::json modes = nlohmann::json::array();
  for (KeyMode m : c.modes) modes.push_back(keyModeName(m));
  nlohmann::json methods = nlohmann::json::array();
  for (KeyMode m : c.modes) methods.push_back(methodName(Method::TurboQuant, m));
  for (Method m : c.methods) methods.push_back(methodName(m));
  j["config"] = {{"key_bits", c.keyBits}, {"value_bits", c.valueBits}, {"modes", modes}, {"proj_dims", c.projDims},
                 {"rotation", rotationName(c.rotation)}, {"law", lawName(c.law)}, {"seed", c.seed}, {"reference_one_bit", c.referenceOneBit},
                 {"layers", c.layers}, {"q_heads", c.qHeads}, {"query_source", querySourceName(c.queries)}, {"max_queries", c.maxQueries},
                 {"evaluate_values", c.evaluateValues}, {"key_centering", centeringLabel(c)},
                 {"methods", methods}, {"kivi_group", c.methodOptions.group}, {"kivi_window", c.methodOptions.window},
                 {"outlier_channels", c.methodOptions.outlierChannels}, {"protect_layers", protectLayersLabel(c)}, {"recent_window", c.recentWindow},
                 {"qjl_matrix", c.orthogonalQjl ? "orthogonal" : "gaussian"}};
  nlohmann::json rows = nlohmann::json::array();
  for (const SweepRow& row : r.rows)
    rows.push_back({{"key", keyJson(row.key)}, {"value_bits", row.valueBits}, {"layer", row.layer}, {"q_head", row.qHead}, {"kv_head", row.kvHead},
                    {"tokens", row.tokens}, {"metrics", metricsJson(row.m)}, {"key_vector_mse", jnum(row.keyVectorMse)},
                    {"value_vector_mse", jnum(row.valueVectorMse)}, {"key_bytes_per_vector", row.keyBytesPerVector},
                    {"value_bytes_per_vector", row.valueBytesPerVector}, {"key_bits_per_coordinate", 8.0 * row.keyBytesPerVector / r.headDim},
                    {"method", row.key.methodName()}, {"method_options", methodOptionsLabel(row.key.method, c.methodOptions)}});
  j["rows"] = rows;
  nlohmann::json summary = nlohmann::json::array();
  for (const SweepSummary& s : r.summary())
    summary.push_back({{"key", keyJson(s.key)}, {"method", s.key.methodName()}, {"value_bits", s.valueBits}, {"rows", s.rows},
                       {"key_bytes_per_vector", s.keyBytesPerVector}, {"value_bytes_per_vector", s.valueBytesPerVector},
                       {"key_bits_per_coordinate", 8.0 * s.keyBytesPerVector / r.headDim}, {"mean", metricsJson(s.mean)}, {"worst", metricsJson(s.worst)}});
  j["summary"] = summary;
  os << j.dump(2) << '\n';
}

void writeCsv(const SweepResult& r, const std::string& path) { toFile(path, [&](std::ostream& os) { writeCsv(r, os); }); }
void writeSummaryCsv(const SweepResult& r, const std::string& path) { toFile(path, [&](std::ostream& os) { writeSummaryCsv(r, os); }); }
void writeJson(const SweepResult& r, const std::string& path) { toFile(path, [&](std::ostream& os) { writeJson(r, os); }); }

}  // namespace tq

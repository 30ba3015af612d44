// SPDX-License-Identifier: GPL-3.0-or-later
#include "experiment.h"

#include <QJsonValue>
#include <algorithm>
#include <stdexcept>

namespace tq::ui {

const char* projChoiceName(ProjChoice p) {
  switch (p) {
    case ProjChoice::Quarter: return "d/4";
    case ProjChoice::Half: return "d/2";
    case ProjChoice::Full: return "d";
    case ProjChoice::Double: return "2d";
    default: return "custom";
  }
}

ProjChoice parseProjChoice(const QString& s, bool* ok) {
  if (ok) *ok = true;
  if (s == "d/4") return ProjChoice::Quarter;
  if (s == "d/2") return ProjChoice::Half;
  if (s == "d") return ProjChoice::Full;
  if (s == "2d") return ProjChoice::Double;
  if (s == "custom") return ProjChoice::Custom;
  if (ok) *ok = false;
  return ProjChoice::Full;
}

QString keyModeLabel(tq::KeyMode m) {
  switch (m) {
    case tq::KeyMode::Mse: return "MSE-only";
    case tq::KeyMode::Prod: return "MSE+QJL";
    default: return "QJL-only";
  }
}

int Experiment::projDimFor(int d) const {
  switch (proj) {
    case ProjChoice::Quarter: return std::max(1, d / 4);
    case ProjChoice::Half: return std::max(1, d / 2);
    case ProjChoice::Full: return d;
    case ProjChoice::Double: return 2 * d;
    default: return std::max(1, customProj);
  }
}

int Experiment::projDim(int d) const { return keyMode == tq::KeyMode::Mse ? 0 : projDimFor(d); }

QJsonObject Experiment::toJson() const {
  QJsonObject data;
  data["kind"] = dataKind == DataKind::Sample ? "sample" : dataKind == DataKind::File ? "file" : "synthetic";
  if (dataKind == DataKind::File) data["path"] = dataPath;
  if (dataKind == DataKind::Synthetic) {
    QJsonObject s;
    s["kind"] = tq::syntheticKindName(synth.kind);
    s["layers"] = synth.layers;
    s["qHeads"] = synth.qHeads;
    s["kvHeads"] = synth.kvHeads;
    s["tokens"] = synth.tokens;
    s["headDim"] = synth.headDim;
    s["seed"] = QString::number(synth.seed);
    s["outlierChannels"] = synth.outlierChannels;
    s["outlierStrength"] = synth.outlierStrength;
    s["rank"] = synth.rank;
    s["noise"] = synth.noise;
    s["needle"] = synth.needle;
    s["needlePosition"] = synth.needlePosition;
    s["needleStrength"] = synth.needleStrength;
    data["synthetic"] = s;
  }
  QJsonObject o;
  o["format"] = "tqstudio-experiment/1";
  o["data"] = data;
  o["keyBits"] = keyBits;
  o["valueBits"] = valueBits;
  o["keyMode"] = tq::keyModeName(keyMode);
  o["projDim"] = projChoiceName(proj);
  o["customProjDim"] = customProj;
  o["rotation"] = tq::rotationName(rotation);
  o["law"] = tq::lawName(law);
  o["seed"] = QString::number(seed);
  o["backend"] = tq::backendChoiceName(backend);
  o["layer"] = layer;
  o["qHead"] = qHead;
  o["queryPos"] = queryPos;
  o["querySource"] = tq::querySourceName(querySource);
  o["heatmap"] = softmaxWeights ? "softmax" : "logits";
  o["sweepQueries"] = sweepQueries;
  o["sweepCells"] = sweepCells;
  o["modelPreset"] = modelPreset;
  o["context"] = QString::number(context);
  return o;
}

bool Experiment::fromJson(const QJsonObject& o, QString* error) {
  Experiment e = *this;
  try {
    auto str = [&](const char* k, const QString& def) { return o.contains(k) ? o.value(k).toVariant().toString() : def; };
    auto num = [&](const char* k, int def) { return o.contains(k) ? o.value(k).toInt(def) : def; };
    if (o.contains("data")) {
      const QJsonObject d = o.value("data").toObject();
      const QString kind = d.value("kind").toString("sample");
      if (kind == "sample") {
        e.dataKind = DataKind::Sample;
      } else if (kind == "file") {
        e.dataKind = DataKind::File;
        e.dataPath = d.value("path").toString();
      } else if (kind == "synthetic") {
        e.dataKind = DataKind::Synthetic;
        const QJsonObject s = d.value("synthetic").toObject();
        e.synth.kind = tq::parseSyntheticKind(s.value("kind").toString("outliers").toStdString());
        e.synth.layers = s.value("layers").toInt(e.synth.layers);
        e.synth.qHeads = s.value("qHeads").toInt(e.synth.qHeads);
        e.synth.kvHeads = s.value("kvHeads").toInt(e.synth.kvHeads);
        e.synth.tokens = s.value("tokens").toInt(e.synth.tokens);
        e.synth.headDim = s.value("headDim").toInt(e.synth.headDim);
        e.synth.seed = s.value("seed").toVariant().toString().toULongLong();
        e.synth.outlierChannels = s.value("outlierChannels").toInt(e.synth.outlierChannels);
        e.synth.outlierStrength = static_cast<float>(s.value("outlierStrength").toDouble(e.synth.outlierStrength));
        e.synth.rank = s.value("rank").toInt(e.synth.rank);
        e.synth.noise = static_cast<float>(s.value("noise").toDouble(e.synth.noise));
        e.synth.needle = s.value("needle").toBool(e.synth.needle);
        e.synth.needlePosition = s.value("needlePosition").toInt(e.synth.needlePosition);
        e.synth.needleStrength = static_cast<float>(s.value("needleStrength").toDouble(e.synth.needleStrength));
        e.synth.validate();
      } else {
        throw std::invalid_argument("unknown data kind '" + kind.toStdString() + "'");
      }
    }
    e.keyBits = num("keyBits", e.keyBits);
    e.valueBits = num("valueBits", e.valueBits);
    if (e.keyBits < 1 || e.keyBits > 8 || e.valueBits < 1 || e.valueBits > 8) throw std::invalid_argument("bits must be in 1..8");
    e.keyMode = tq::parseKeyMode(str("keyMode", tq::keyModeName(e.keyMode)).toStdString());
    bool ok = true;
    e.proj = parseProjChoice(str("projDim", projChoiceName(e.proj)), &ok);
    if (!ok) throw std::invalid_argument("projDim must be d/4, d/2, d, 2d or custom");
    e.customProj = num("customProjDim", e.customProj);
    if (e.customProj < 1 || e.customProj > 16384) throw std::invalid_argument("customProjDim must be in 1..16384");
    e.rotation = tq::parseRotation(str("rotation", tq::rotationName(e.rotation)).toStdString());
    e.law = tq::parseLaw(str("law", tq::lawName(e.law)).toStdString());
    e.seed = str("seed", QString::number(e.seed)).toULongLong(&ok);
    if (!ok) throw std::invalid_argument("seed must be an unsigned integer");
    e.backend = tq::parseBackendChoice(str("backend", tq::backendChoiceName(e.backend)).toStdString());
    e.layer = num("layer", e.layer);
    e.qHead = num("qHead", e.qHead);
    e.queryPos = num("queryPos", e.queryPos);
    e.querySource = tq::parseQuerySource(str("querySource", tq::querySourceName(e.querySource)).toStdString());
    e.softmaxWeights = str("heatmap", e.softmaxWeights ? "softmax" : "logits") != "logits";
    e.sweepQueries = std::clamp(num("sweepQueries", e.sweepQueries), 1, 100000);
    e.sweepCells = std::clamp(num("sweepCells", e.sweepCells), 0, 100000000);
    e.modelPreset = str("modelPreset", e.modelPreset);
    e.context = str("context", QString::number(e.context)).toLongLong(&ok);
    if (!ok || e.context < 1) throw std::invalid_argument("context must be a positive integer");
  } catch (const std::exception& ex) {
    if (error) *error = QString::fromStdString(ex.what());
    return false;
  }
  *this = e;
  return true;
}

QString Experiment::quantLabel(int headDim) const {
  QString s = QString("K%1/V%2 · %3").arg(keyBits).arg(valueBits).arg(keyModeLabel(keyMode));
  if (keyMode != tq::KeyMode::Mse) s += QString(" m=%1").arg(projDimFor(headDim));
  s += QString(" · %1 · %2 law · seed %3")
           .arg(rotation == tq::RotationKind::Hadamard ? "Hadamard" : "Haar")
           .arg(tq::lawName(law))
           .arg(seed);
  return s;
}

QString Experiment::caption(const QString& model, int tokens, int headDim, const QString& queryLabel, const QString& backendLabel) const {
  QString s = quantLabel(headDim) + QString(" · %1 · %2 tokens · L%3 H%4").arg(model).arg(tokens).arg(layer).arg(qHead);
  if (!queryLabel.isEmpty()) s += " · " + queryLabel;
  if (!backendLabel.isEmpty()) s += " · " + backendLabel;
  return s;
}

bool Experiment::applyFlag(const QString& key, const QString& value, QString* error) {
  try {
    bool ok = true;
    auto toInt = [&](int lo, int hi) {
      const int v = value.toInt(&ok);
      if (!ok || v < lo || v > hi) throw std::invalid_argument(QString("--%1 expects an integer in %2..%3, got '%4'").arg(key).arg(lo).arg(hi).arg(value).toStdString());
      return v;
    };
    if (key == "key-bits") keyBits = toInt(1, 8);
    else if (key == "value-bits") valueBits = toInt(1, 8);
    else if (key == "bits") keyBits = valueBits = toInt(1, 8);
    else if (key == "mode" || key == "key-mode") keyMode = tq::parseKeyMode(value.toStdString());
    else if (key == "proj-dim" || key == "m") {
      proj = parseProjChoice(value, &ok);
      if (!ok) {
        proj = ProjChoice::Custom;
        customProj = toInt(1, 16384);
      }
    } else if (key == "rotation") rotation = tq::parseRotation(value.toStdString());
    else if (key == "law" || key == "codebook") law = tq::parseLaw(value.toStdString());
    else if (key == "seed") {
      seed = value.toULongLong(&ok);
      if (!ok) throw std::invalid_argument("--seed expects an unsigned integer");
    } else if (key == "backend") backend = tq::parseBackendChoice(value.toStdString());
    else if (key == "layer") layer = toInt(0, 100000);
    else if (key == "head") qHead = toInt(0, 100000);
    else if (key == "query-pos") queryPos = toInt(-1, 100000000);
    else if (key == "queries") querySource = tq::parseQuerySource(value.toStdString());
    else if (key == "heatmap") {
      if (value != "softmax" && value != "logits") throw std::invalid_argument("--heatmap expects softmax or logits");
      softmaxWeights = value == "softmax";
    } else if (key == "model") modelPreset = value;
    else if (key == "context") {
      context = value.toLongLong(&ok);
      if (!ok || context < 1) throw std::invalid_argument("--context expects a positive integer");
    } else if (key == "sweep-queries") sweepQueries = toInt(1, 100000);
    else if (key == "sample-cells") sweepCells = toInt(0, 100000000);
    else throw std::invalid_argument(QString("unknown option --%1").arg(key).toStdString());
  } catch (const std::exception& ex) {
    if (error) *error = QString::fromStdString(ex.what());
    return false;
  }
  return true;
}

QString Experiment::flagHelp() {
  return "  --key-bits N --value-bits N (1..8)   --mode mse|prod|qjl   --proj-dim d/4|d/2|d|2d|N\n"
         "  --rotation haar|hadamard   --law exact|gaussian   --seed N   --backend auto|cpu|cuda\n"
         "  --layer L --head H --query-pos T   --queries dump|last-key|random   --heatmap softmax|logits\n"
         "  --model PRESET --context TOKENS   --sweep-queries N   --sample-cells N (fidelity sweep on N cells; 0 = all)\n";
}

}  // namespace tq::ui

// SPDX-License-Identifier: GPL-3.0-or-later
#include "experiment.h"

#include "explore/curves.h"

#include <QDir>
#include <QFileInfo>
#include <QJsonDocument>
#include <QJsonValue>
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "data/io_util.h"
#include "data/safetensors.h"

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
  if (dataKind == DataKind::Sample) data["sample"] = tq::sampleInfo(sample).key;
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
  o["qjlMatrix"] = orthogonalQjl ? "orthogonal" : "gaussian";
  o["keyCentering"] = QString::fromStdString(tq::keyCenteringLabel(centering, centerWindow));
  o["methods"] = QString::fromStdString(tq::methodListLabel(methods));
  o["protectLayers"] = protectLayers > 0 ? QString("%1:%2").arg(protectLayers).arg(protectBits) : QString("none");
  o["kiviGroup"] = methodOptions.group;
  o["kiviWindow"] = methodOptions.window;
  o["fidelityX"] = fidelityAxisName(fidelityX);
  o["recentWindow"] = recentWindow;
  o["compare"] = compareLabel();
  o["layerMetric"] = layerMetric;
  o["layerMethod"] = QString::fromStdString(tq::methodName(layerMethod, keyMode));
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

const char* fidelityAxisName(FidelityAxis a) { return a == FidelityAxis::Bytes ? "bytes" : a == FidelityAxis::Ratio ? "ratio" : "key-bits"; }
FidelityAxis parseFidelityAxis(const QString& s, bool* ok) {
  *ok = true;
  if (s == "key-bits" || s == "bits") return FidelityAxis::KeyBits;
  if (s == "bytes") return FidelityAxis::Bytes;
  if (s == "ratio") return FidelityAxis::Ratio;
  *ok = false;
  return FidelityAxis::KeyBits;
}

namespace {
/// The GUI always sweeps TurboQuant's three modes: a list names the baselines beside them ("none": no
/// baseline; tq-mse, tq-prod, tq-qjl are accepted and already there).
std::vector<tq::Method> baselineList(const QString& text, const char* what) {
  if (text.isEmpty() || text == "none") return {};
  std::vector<tq::KeyMode> modes;
  std::vector<tq::Method> methods;
  try {
    tq::parseMethodList(text.toStdString(), modes, methods);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(what) + ": " + e.what());
  }
  return methods;
}

QString checkedLayerMetric(const QString& m, const char* what) {
  for (const auto& cm : tq::curveMetrics())
    if (m == cm.column) return m;
  throw std::invalid_argument(std::string(what) + " must be attention_cosine, top1, top5, kl, logit_cosine or output_error, got \"" +
                              m.left(40).toStdString() + "\"");
}
/// "tq" (or tq-mse / tq-prod / tq-qjl): the current TurboQuant configuration; otherwise a baseline.
tq::Method layerMethodOf(const QString& s, const char* what) {
  if (s == "tq") return tq::Method::TurboQuant;
  try {
    return tq::parseMethod(s.toStdString()).method;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(what) + ": " + e.what());
  }
}

// Typed, bounded access to an experiment's JSON fields: a field of the wrong type or out of range is an
// error naming the field, the expected type and what was found (it used to fall back to the default).
QString describe(const QJsonValue& v) {
  switch (v.type()) {
    case QJsonValue::String: return "the string \"" + v.toString().left(40) + "\"";
    case QJsonValue::Double: return "the number " + QString::number(v.toDouble(), 'g', 17);
    case QJsonValue::Bool: return v.toBool() ? "true" : "false";
    case QJsonValue::Array: return "a list";
    case QJsonValue::Object: return "an object";
    case QJsonValue::Null: return "null";
    default: return "nothing";
  }
}
[[noreturn]] void wrongField(const QString& where, const char* k, const QString& expected, const QJsonValue& v) {
  throw std::invalid_argument((where + k + " must be " + expected + ", got " + describe(v)).toStdString());
}
struct Fields {
  const QJsonObject& o;
  QString where;  // "" or "data.synthetic."
  long long integer(const char* k, long long def, long long lo, long long hi) const {
    if (!o.contains(k)) return def;
    const QJsonValue v = o.value(k);
    const QString expected = QString("an integer in %1..%2").arg(lo).arg(hi);
    if (!v.isDouble()) wrongField(where, k, expected, v);
    const double x = v.toDouble();
    if (x != std::floor(x) || x < static_cast<double>(lo) || x > static_cast<double>(hi)) wrongField(where, k, expected, v);
    return static_cast<long long>(x);
  }
  double real(const char* k, double def, double lo, double hi) const {
    if (!o.contains(k)) return def;
    const QJsonValue v = o.value(k);
    const QString expected = QString("a number in [%1, %2]").arg(lo).arg(hi);
    if (!v.isDouble() || !(v.toDouble() >= lo && v.toDouble() <= hi)) wrongField(where, k, expected, v);
    return v.toDouble();
  }
  QString string(const char* k, const QString& def) const {
    if (!o.contains(k)) return def;
    const QJsonValue v = o.value(k);
    if (!v.isString()) wrongField(where, k, "a string", v);
    return v.toString();
  }
  bool boolean(const char* k, bool def) const {
    if (!o.contains(k)) return def;
    const QJsonValue v = o.value(k);
    if (!v.isBool()) wrongField(where, k, "true or false", v);
    return v.toBool();
  }
  QJsonObject object(const char* k) const {
    const QJsonValue v = o.value(k);
    if (!v.isObject()) wrongField(where, k, "an object", v);
    return v.toObject();
  }
  /// Seeds are 64-bit: a decimal string, or a JSON number that is an exact non-negative integer below 2^53.
  quint64 seed(const char* k, quint64 def) const {
    if (!o.contains(k)) return def;
    const QJsonValue v = o.value(k);
    if (v.isString()) {
      bool ok = false;
      const quint64 x = v.toString().toULongLong(&ok);
      if (!ok) wrongField(where, k, "an unsigned integer (or its decimal string)", v);
      return x;
    }
    return static_cast<quint64>(integer(k, 0, 0, (1LL << 53)));
  }
};
}  // namespace

bool Experiment::fromJson(const QJsonObject& o, QString* error) {
  Experiment e = *this;
  try {
    const Fields f{o, ""};
    const QString format = f.string("format", "tqstudio-experiment/1");
    if (format != "tqstudio-experiment/1")
      throw std::invalid_argument("format is \"" + format.left(40).toStdString() + "\", not tqstudio-experiment/1");
    if (o.contains("data")) {
      const Fields d{f.object("data"), "data."};
      const QString kind = d.string("kind", "sample");
      if (kind == "sample") {
        e.dataKind = DataKind::Sample;
        const QString which = d.string("sample", tq::sampleInfo(e.sample).key);
        if (!tq::parseSampleArgument("sample:" + which.toStdString(), &e.sample))
          throw std::invalid_argument("data.sample must be default or tiny, got \"" + which.left(40).toStdString() + "\"");
      } else if (kind == "file") {
        e.dataKind = DataKind::File;
        e.dataPath = d.string("path", "");
        if (e.dataPath.isEmpty()) throw std::invalid_argument("data.path must name the dump file");
      } else if (kind == "synthetic") {
        e.dataKind = DataKind::Synthetic;
        const Fields y{d.object("synthetic"), "data.synthetic."};
        e.synth.kind = tq::parseSyntheticKind(y.string("kind", "outliers").toStdString());
        e.synth.layers = static_cast<int>(y.integer("layers", e.synth.layers, 1, 4096));
        e.synth.qHeads = static_cast<int>(y.integer("qHeads", e.synth.qHeads, 1, 65536));
        e.synth.kvHeads = static_cast<int>(y.integer("kvHeads", e.synth.kvHeads, 1, 65536));
        e.synth.tokens = static_cast<int>(y.integer("tokens", e.synth.tokens, 1, 1 << 30));
        e.synth.headDim = static_cast<int>(y.integer("headDim", e.synth.headDim, tq::kMinHeadDimension, tq::kMaxHeadDimension));
        e.synth.seed = y.seed("seed", e.synth.seed);
        e.synth.outlierChannels = static_cast<int>(y.integer("outlierChannels", e.synth.outlierChannels, 0, tq::kMaxHeadDimension));
        e.synth.outlierStrength = static_cast<float>(y.real("outlierStrength", e.synth.outlierStrength, 0, 1e4));
        e.synth.rank = static_cast<int>(y.integer("rank", e.synth.rank, 0, tq::kMaxHeadDimension));
        e.synth.noise = static_cast<float>(y.real("noise", e.synth.noise, 0, 1e4));
        e.synth.needle = y.boolean("needle", e.synth.needle);
        e.synth.needlePosition = static_cast<int>(y.integer("needlePosition", e.synth.needlePosition, -1, 1 << 30));
        e.synth.needleStrength = static_cast<float>(y.real("needleStrength", e.synth.needleStrength, 0, 1e4));
        e.synth.validate();
      } else {
        throw std::invalid_argument("data.kind must be sample, file or synthetic, got \"" + kind.left(40).toStdString() + "\"");
      }
    }
    e.keyBits = static_cast<int>(f.integer("keyBits", e.keyBits, 1, 8));
    e.valueBits = static_cast<int>(f.integer("valueBits", e.valueBits, 1, 8));
    e.keyMode = tq::parseKeyMode(f.string("keyMode", tq::keyModeName(e.keyMode)).toStdString());
    bool ok = true;
    e.proj = parseProjChoice(f.string("projDim", projChoiceName(e.proj)), &ok);
    if (!ok) throw std::invalid_argument("projDim must be d/4, d/2, d, 2d or custom");
    e.customProj = static_cast<int>(f.integer("customProjDim", e.customProj, 1, 16384));
    e.rotation = tq::parseRotation(f.string("rotation", tq::rotationName(e.rotation)).toStdString());
    {
      const QString qm = f.string("qjlMatrix", e.orthogonalQjl ? "orthogonal" : "gaussian");
      if (qm != "gaussian" && qm != "orthogonal") throw std::invalid_argument("qjlMatrix must be gaussian or orthogonal");
      e.orthogonalQjl = qm == "orthogonal";
    }
    e.centering = tq::parseKeyCentering(f.string("keyCentering", QString::fromStdString(tq::keyCenteringLabel(e.centering, e.centerWindow))).toStdString(),
                                        &e.centerWindow);
    if (o.contains("methods")) e.methods = baselineList(f.string("methods", ""), "methods");
    if (o.contains("protectLayers")) tq::parseProtectLayers(f.string("protectLayers", "none").toStdString(), &e.protectLayers, &e.protectBits);
    e.methodOptions.group = static_cast<int>(f.integer("kiviGroup", e.methodOptions.group, 1, 65536));
    e.methodOptions.window = static_cast<int>(f.integer("kiviWindow", e.methodOptions.window, 0, 1 << 24));
    e.fidelityX = parseFidelityAxis(f.string("fidelityX", fidelityAxisName(e.fidelityX)), &ok);
    if (!ok) throw std::invalid_argument("fidelityX must be key-bits, bytes or ratio");
    e.layerMetric = checkedLayerMetric(f.string("layerMetric", e.layerMetric), "layerMetric");
    if (o.contains("layerMethod")) e.layerMethod = layerMethodOf(f.string("layerMethod", ""), "layerMethod");
    e.recentWindow = static_cast<int>(f.integer("recentWindow", e.recentWindow, 0, 1 << 24));
    if (o.contains("compare")) e.parseCompare(f.string("compare", "none"));
    e.law = tq::parseLaw(f.string("law", tq::lawName(e.law)).toStdString());
    e.seed = f.seed("seed", e.seed);
    e.backend = tq::parseBackendChoice(f.string("backend", tq::backendChoiceName(e.backend)).toStdString());
    e.layer = static_cast<int>(f.integer("layer", e.layer, 0, 1 << 20));
    e.qHead = static_cast<int>(f.integer("qHead", e.qHead, 0, 1 << 20));
    e.queryPos = static_cast<int>(f.integer("queryPos", e.queryPos, -1, 1 << 30));
    e.querySource = tq::parseQuerySource(f.string("querySource", tq::querySourceName(e.querySource)).toStdString());
    const QString heat = f.string("heatmap", e.softmaxWeights ? "softmax" : "logits");
    if (heat != "softmax" && heat != "logits") throw std::invalid_argument("heatmap must be softmax or logits");
    e.softmaxWeights = heat == "softmax";
    e.sweepQueries = static_cast<int>(f.integer("sweepQueries", e.sweepQueries, 1, 100000));
    e.sweepCells = static_cast<int>(f.integer("sweepCells", e.sweepCells, 0, 100000000));
    e.modelPreset = f.string("modelPreset", e.modelPreset);
    if (o.contains("context")) {
      const QJsonValue v = o.value("context");
      if (v.isString()) {
        e.context = v.toString().toLongLong(&ok);
        if (!ok || e.context < 1) throw std::invalid_argument("context must be a positive integer");
      } else {
        e.context = f.integer("context", e.context, 1, 1LL << 40);
      }
    }
  } catch (const std::exception& ex) {
    if (error) *error = QString::fromStdString(ex.what());
    return false;
  }
  *this = e;
  return true;
}

QString Experiment::quantLabel(int headDim) const {
  QString s = QString("K%1/V%2 · %3").arg(keyBits).arg(valueBits).arg(keyModeLabel(keyMode));
  if (keyMode != tq::KeyMode::Mse) s += QString(" m=%1").arg(projDimFor(headDim)) + (orthogonalQjl ? " orthogonal S" : "");
  s += QString(" · %1 · %2 law · seed %3")
           .arg(rotation == tq::RotationKind::Hadamard ? "Hadamard" : "Haar")
           .arg(tq::lawName(law))
           .arg(seed);
  if (protectLayers > 0) s += QString(" · first/last %1 layers at %2 bits").arg(protectLayers).arg(protectBits);
  if (recentWindow > 0) s += QString(" · last %1 tokens fp16").arg(recentWindow);
  if (centering != tq::KeyCentering::None)
    s += QString(" · keys centred (%1%2)").arg(QString::fromStdString(tq::keyCenteringLabel(centering, centerWindow)),
                                             centering == tq::KeyCentering::Oracle ? ", whole-dump mean" : "");
  return s;
}

QString Experiment::caption(const QString& model, int tokens, int headDim, const QString& queryLabel, const QString& backendLabel) const {
  QString s = quantLabel(headDim) + QString(" · %1 · %2 tokens · L%3 H%4").arg(model).arg(tokens).arg(layer).arg(qHead);
  if (!queryLabel.isEmpty()) s += " · " + queryLabel;
  if (!backendLabel.isEmpty()) s += " · " + backendLabel;
  return s;
}

tq::KeyVariant Experiment::compareVariant(int headDim) const {
  if (compareMethod == "tq") return {keyMode, compareBits, keyMode == tq::KeyMode::Mse ? 0 : projDimFor(headDim), tq::Method::TurboQuant};
  const tq::MethodSpec spec = tq::parseMethod(compareMethod.toStdString());
  if (spec.method == tq::Method::TurboQuant) return {spec.mode, compareBits, spec.mode == tq::KeyMode::Mse ? 0 : projDimFor(headDim), spec.method};
  if (spec.method == tq::Method::TqRef11) return {tq::KeyMode::Prod, 1, headDim, spec.method};
  const int b = tq::methodHasBits(spec.method) ? std::min(compareBits, tq::methodMaxBits(spec.method)) : tq::methodFixedBits(spec.method);
  return {tq::KeyMode::Mse, b, 0, spec.method};
}

QString Experiment::compareLabel() const {
  if (!comparing()) return "none";
  if (compareMethod != "tq" && !tq::methodHasBits(tq::parseMethod(compareMethod.toStdString()).method) &&
      tq::parseMethod(compareMethod.toStdString()).method != tq::Method::TurboQuant)
    return compareMethod;
  return QString("%1:%2").arg(compareMethod).arg(compareBits);
}

void Experiment::parseCompare(const QString& s) {
  const QString t = s.trimmed();
  if (t.isEmpty() || t == "none") {
    compareMethod = "none";
    return;
  }
  const QString name = t.section(':', 0, 0), bits = t.section(':', 1);
  if (name != "tq") {
    try {
      tq::parseMethod(name.toStdString());
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("compare: ") + e.what());
    }
  }
  int b = compareBits;
  if (!bits.isEmpty()) {
    bool ok = false;
    b = bits.toInt(&ok);
    if (!ok || b < 1 || b > 8) throw std::invalid_argument("compare: the bits after ':' must be 1..8, got '" + bits.left(20).toStdString() + "'");
  }
  compareMethod = name;
  compareBits = b;
}

tq::KeyVariant Experiment::layerVariant(int headDim) const {
  if (layerMethod == tq::Method::TurboQuant) return {keyMode, keyBits, keyMode == tq::KeyMode::Mse ? 0 : projDimFor(headDim), tq::Method::TurboQuant};
  if (layerMethod == tq::Method::TqRef11) return {tq::KeyMode::Prod, 1, headDim, tq::Method::TqRef11};
  const int b = tq::methodHasBits(layerMethod) ? std::min(keyBits, tq::methodMaxBits(layerMethod)) : tq::methodFixedBits(layerMethod);
  return {tq::KeyMode::Mse, b, 0, layerMethod};
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
    else if (key == "qjl-matrix") {
      if (value != "gaussian" && value != "orthogonal") throw std::invalid_argument("--qjl-matrix expects gaussian or orthogonal");
      orthogonalQjl = value == "orthogonal";
    }
    else if (key == "center") centering = tq::parseKeyCentering(value.toStdString(), &centerWindow);
    else if (key == "law" || key == "codebook") law = tq::parseLaw(value.toStdString());
    else if (key == "methods") methods = baselineList(value, "--methods");
    else if (key == "group") methodOptions.group = toInt(1, 65536);
    else if (key == "protect-layers") tq::parseProtectLayers(value.toStdString(), &protectLayers, &protectBits);
    else if (key == "window") methodOptions.window = toInt(0, 1 << 24);
    else if (key == "recent-window") recentWindow = toInt(0, 1 << 24);
    else if (key == "compare") parseCompare(value);
    else if (key == "layer-metric") layerMetric = checkedLayerMetric(value, "--layer-metric");
    else if (key == "layer-method") layerMethod = layerMethodOf(value, "--layer-method");
    else if (key == "fidelity-x") {
      fidelityX = parseFidelityAxis(value, &ok);
      if (!ok) throw std::invalid_argument("--fidelity-x expects key-bits, bytes or ratio");
    }
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
         "  --qjl-matrix gaussian|orthogonal   --rotation haar|hadamard   --law exact|gaussian   --seed N   --backend auto|cpu|cuda\n"
         "  --center none|causal[:W]|oracle (subtract the per-head key mean before quantizing)\n"
         "  --methods LIST: baselines swept beside TurboQuant (tq-mse-nc,kivi,int-rot,fp8-e4m3,fp8-e5m2,fp16; 'none')\n"
         "  --protect-layers N:BITS (first/last N layers at BITS)   --group G --window R (KIVI)   --fidelity-x key-bits|bytes|ratio (the fidelity view's x axis)\n"
         "  --recent-window N (the last N tokens' keys and values in fp16, every method)   --compare METHOD[:BITS]|none (A/B in the attention view)\n"
         "  --layer-metric attention_cosine|top1|top5|kl|logit_cosine|output_error   --layer-method tq|METHOD (the layer map)\n"
         "  --layer L --head H --query-pos T   --queries dump|last-key|random   --heatmap softmax|logits\n"
         "  --model PRESET --context TOKENS   --sweep-queries N   --sample-cells N (fidelity sweep on N cells; 0 = all)\n";
}

bool loadExperimentFile(const QString& path, Experiment& e, QString* error) {
  std::string text;
  try {
    text = tq::io::readSmallFile(path.toStdString(), 1 << 20, "experiment file");
  } catch (const tq::DataError& ex) {
    if (error) *error = QString::fromStdString(ex.what());
    return false;
  }
  QJsonParseError pe;
  const auto doc = QJsonDocument::fromJson(QByteArray::fromStdString(text), &pe);
  if (!doc.isObject()) {
    if (error) *error = path + ": not an experiment (" + (pe.error == QJsonParseError::NoError ? QString("not a JSON object") : pe.errorString()) + ")";
    return false;
  }
  Experiment parsed = e;
  QString why;
  if (!parsed.fromJson(doc.object(), &why)) {
    if (error) *error = path + ": " + why;
    return false;
  }
  if (parsed.dataKind == DataKind::File && QFileInfo(parsed.dataPath).isRelative()) parsed.dataPath = QFileInfo(path).dir().filePath(parsed.dataPath);
  e = parsed;
  return true;
}

}  // namespace tq::ui

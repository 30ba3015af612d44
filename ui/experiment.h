// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// One experiment as the user sets it up in the GUI: the quantizer, the selection (layer, head, query),
/// the data (file, embedded sample or synthetic generator) and the view options. Serialises to JSON
/// (File > Save Experiment) and to QSettings, converts to the engine's SweepConfig, and formats the caption
/// that every figure carries.
#include <QJsonObject>
#include <QString>
#include <QStringList>
#include <cstdint>

#include "backend/backend.h"
#include "data/samples.h"
#include "synth/synthetic.h"
#include "sweep/sweep.h"

namespace tq::ui {

/// proj_dim m relative to head_dim d.
enum class ProjChoice { Quarter, Half, Full, Double, Custom };
const char* projChoiceName(ProjChoice p);  ///< "d/4", "d/2", "d", "2d", "custom"
ProjChoice parseProjChoice(const QString& s, bool* ok = nullptr);

enum class DataKind { Sample, File, Synthetic };

/// The fidelity view's x axis: key bits, bytes per (token, kv head) of keys + values, or that as a
/// compression ratio versus fp16 keys + values.
enum class FidelityAxis { KeyBits, Bytes, Ratio };
const char* fidelityAxisName(FidelityAxis a);  ///< "key-bits", "bytes", "ratio"
FidelityAxis parseFidelityAxis(const QString& s, bool* ok);

struct Experiment {
  // data
  DataKind dataKind = DataKind::Sample;
  tq::SampleId sample = tq::SampleId::Default;  ///< DataKind::Sample: which embedded sample
  QString dataPath;                 ///< DataKind::File
  tq::SyntheticSpec synth;          ///< DataKind::Synthetic
  // quantizer
  int keyBits = 3, valueBits = 4;
  tq::KeyMode keyMode = tq::KeyMode::Prod;
  ProjChoice proj = ProjChoice::Full;
  int customProj = 16;
  tq::RotationKind rotation = tq::RotationKind::Haar;
  bool orthogonalQjl = false;       ///< QJL stages with an orthogonalised S (QuantConfig::orthogonalQjl)
  tq::KeyCentering centering = tq::KeyCentering::None;  ///< keys centred before quantizing (backend/centering.h)
  int centerWindow = 128;                               ///< causal centering: mu from (and exact) first tokens
  /// Baselines swept beside TurboQuant (core/methods) and KIVI's options.
  std::vector<tq::Method> methods;
  tq::MethodOptions methodOptions;
  int protectLayers = 0, protectBits = 8;  ///< V3 option: first/last N layers at BITS (0: none)
  int recentWindow = 0;  ///< V3 option: the last N tokens' keys and values in fp16, every method (0: none)
  /// A/B in the attention view: configuration B beside the current one (A). "none" (off), "tq" (TurboQuant's
  /// current mode) or a method name (tq-mse, tq-prod, tq-qjl, tq-ref11, kivi, int-rot, fp8-e4m3, ...), at
  /// compareBits (methods with a fixed width ignore it).
  QString compareMethod = "none";
  int compareBits = 3;
  bool comparing() const { return compareMethod != "none"; }
  /// B as a key variant for head size d (TurboQuant: m as the current configuration's).
  tq::KeyVariant compareVariant(int headDim) const;
  /// "kivi:3", "fp8-e4m3" or "none".
  QString compareLabel() const;
  /// Parses "METHOD[:BITS]" or "none" into compareMethod / compareBits; throws std::invalid_argument.
  void parseCompare(const QString& s);
  FidelityAxis fidelityX = FidelityAxis::KeyBits;
  /// The layer x head map: its metric (a curveMetrics() column) and method (TurboQuant: the current key
  /// mode, bits and m; another method: at the current key bits, or its own width for fp8 / fp16).
  QString layerMetric = "attention_cosine";
  tq::Method layerMethod = tq::Method::TurboQuant;
  /// The key variant the layer map shows for head size d (see layerMethod).
  tq::KeyVariant layerVariant(int headDim) const;
  tq::CodebookLaw law = tq::CodebookLaw::Exact;
  quint64 seed = 42;
  tq::BackendChoice backend = tq::BackendChoice::Auto;
  // selection
  int layer = 0, qHead = 0;
  int queryPos = -1;                ///< token position of the query studied (estimator / how it works); -1 = last
  tq::QuerySource querySource = tq::QuerySource::Dump;
  bool softmaxWeights = true;       ///< heatmap shows softmax weights (else raw logits)
  int sweepQueries = 32;            ///< queries per head in the fidelity sweep
  int sweepCells = 0;               ///< fidelity sweep over a seeded sample of N (layer, kv head) cells; 0 = all
  // memory view
  QString modelPreset = "llama-3.1-8b";
  qint64 context = 32768;

  /// m for a head dimension (0 for MSE keys, which have no QJL stage).
  int projDim(int headDim) const;
  /// m for a head dimension regardless of the key mode.
  int projDimFor(int headDim) const;

  QJsonObject toJson() const;
  /// Fills from JSON; unknown keys are ignored, bad values give false and a message.
  bool fromJson(const QJsonObject& o, QString* error);

  /// "K3/V4 · MSE+QJL m=8 · Haar · exact law · seed 42"
  QString quantLabel(int headDim) const;
  /// The caption line on every figure.
  QString caption(const QString& model, int tokens, int headDim, const QString& queryLabel, const QString& backendLabel) const;

  /// Applies one command-line flag (without the leading dashes), e.g. ("key-bits", "3"). Returns false with a
  /// message for an unknown flag or a bad value.
  bool applyFlag(const QString& key, const QString& value, QString* error);
  /// Help text of the configuration flags.
  static QString flagHelp();
};

QString keyModeLabel(tq::KeyMode m);  ///< "MSE-only", "MSE+QJL", "QJL-only"

/// Reads an experiment file (a regular file of at most 1 MiB; a FIFO or device is refused without blocking),
/// parses it over `e` (fields it lacks keep e's values) and makes a relative data path relative to the file.
/// On failure returns false with *error = "<path>: <problem>".
bool loadExperimentFile(const QString& path, Experiment& e, QString* error);

}  // namespace tq::ui

// SPDX-License-Identifier: GPL-3.0-or-later
#include "sources.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QStandardPaths>
#include <cmath>
#include <stdexcept>

#include "data/kv_dump.h"
#include "data/samples.h"
#include "synth/synthetic.h"

namespace tq::ui {

SourceOpener defaultOpener() {
  return [](const std::string& path, const std::function<bool(size_t, size_t)>& progress) -> std::unique_ptr<tq::KvSource> {
    return tq::KvDump::open(path, {}, progress);
  };
}

std::shared_ptr<const tq::KvSource> openData(const Experiment& e, const SourceOpener& opener, const std::function<bool(size_t, size_t)>& progress) {
  switch (e.dataKind) {
    case DataKind::Synthetic: {
      e.synth.validate();
      return std::make_shared<tq::SyntheticKv>(e.synth);
    }
    case DataKind::File: return std::shared_ptr<const tq::KvSource>(opener(e.dataPath.toStdString(), progress));
    default: return std::shared_ptr<const tq::KvSource>(tq::openSample(e.sample));
  }
}

QString describeShape(const tq::KvSource& src) {
  const auto s = src.shape();
  return QString("%1 layers · %2q/%3kv heads\nd=%4 · %5 tokens · %6")
      .arg(s.layers)
      .arg(s.qHeads)
      .arg(s.kvHeads)
      .arg(s.headDim)
      .arg(s.seq)
      .arg(s.hasQueries ? "with queries" : "no queries (proxy)");
}

}  // namespace tq::ui

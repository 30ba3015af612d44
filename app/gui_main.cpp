// SPDX-License-Identifier: GPL-3.0-or-later
// tqstudio: the desktop explorer (everything lives in tq_ui).
#include "headless.h"

int main(int argc, char** argv) { return tq::ui::runGui(argc, argv); }

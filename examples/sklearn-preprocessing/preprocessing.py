"""Preprocess a tabular CSV dataset for training: the classic SageMaker Processing scikit-learn job.

Runs in the container (`ScriptProcessor(command=["python3"])` ships it to
/opt/ml/processing/input/code/). Reads every /opt/ml/processing/input/*.csv,
splits the rows into train and test (stratified by the label), scales the
numeric columns (StandardScaler, fitted on train only) and one-hot encodes the
categorical ones, then writes

    /opt/ml/processing/train/train_features.csv, train_labels.csv
    /opt/ml/processing/test/test_features.csv,   test_labels.csv

Arguments: --train-test-split-ratio (test share, default 0.3), --label
(default income), --positive (the label value that is 1, default >50K),
--random-state (default 0).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

INPUT = "/opt/ml/processing/input"
TRAIN = "/opt/ml/processing/train"
TEST = "/opt/ml/processing/test"
MESSAGE = "/opt/ml/output/message"


def one_hot() -> OneHotEncoder:
    try:
        return OneHotEncoder(handle_unknown="ignore", sparse_output=False)  # scikit-learn >= 1.2
    except TypeError:
        return OneHotEncoder(handle_unknown="ignore", sparse=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-test-split-ratio", type=float, default=0.3)
    parser.add_argument("--label", default="income")
    parser.add_argument("--positive", default=">50K")
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args()
    print(f"Received arguments {vars(args)}", flush=True)

    files = sorted(glob.glob(os.path.join(INPUT, "*.csv")))
    if not files:
        raise SystemExit(f"no CSV files in {INPUT}")
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    print(f"Read {len(df)} rows from {len(files)} files: {[os.path.basename(f) for f in files]}", flush=True)

    labels = (df[args.label].astype(str).str.strip() == args.positive).astype(int).rename(args.label)
    features = df.drop(columns=[args.label])
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    print(f"Numeric columns {numeric}; categorical columns {categorical}", flush=True)

    x_train, x_test, y_train, y_test = train_test_split(
        features,
        labels,
        test_size=args.train_test_split_ratio,
        random_state=args.random_state,
        stratify=labels,
    )
    transformer = ColumnTransformer(
        [("num", StandardScaler(), numeric), ("cat", one_hot(), categorical)],
        verbose_feature_names_out=False,
    )
    print("Fitting the transformer on the train split", flush=True)
    train_features = transformer.fit_transform(x_train)
    test_features = transformer.transform(x_test)
    names = list(transformer.get_feature_names_out())

    os.makedirs(TRAIN, exist_ok=True)
    os.makedirs(TEST, exist_ok=True)
    pd.DataFrame(train_features, columns=names).to_csv(os.path.join(TRAIN, "train_features.csv"), index=False)
    y_train.to_csv(os.path.join(TRAIN, "train_labels.csv"), index=False)
    pd.DataFrame(test_features, columns=names).to_csv(os.path.join(TEST, "test_features.csv"), index=False)
    y_test.to_csv(os.path.join(TEST, "test_labels.csv"), index=False)
    summary = {
        "train_rows": len(y_train),
        "test_rows": len(y_test),
        "features": names,
        "positive_share_train": round(float(y_train.mean()), 4),
    }
    print(f"Train features: {train_features.shape}; test features: {test_features.shape}", flush=True)
    print(json.dumps(summary), flush=True)
    with open(MESSAGE, "w") as fh:
        fh.write(f"train {len(y_train)} rows, test {len(y_test)} rows, {len(names)} features")


if __name__ == "__main__":
    main()

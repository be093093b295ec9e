# A stand-in for apache/airflow:3.3.2-python3.11 where no registry can be reached (scripts/build-images
# --local-base): the same user (airflow, uid 50000, primary group 0), AIRFLOW_HOME and a Python
# environment the airflow user installs into. Airflow itself is installed by images/airflow/Dockerfile
# from casaflow's constraints (the official image has it already; pip then keeps the pinned version).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow airflow \
 && python3.11 -m venv /home/airflow/.local \
 && mkdir -p /opt/airflow && chown -R 50000:0 /opt/airflow /home/airflow && chmod -R g+rwX /opt/airflow /home/airflow
ENV PATH=/home/airflow/.local/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_UID=50000
USER 50000:0
WORKDIR /opt/airflow
